//! The IMAP session (RFC 3501 / RFC 9051 core): command framing with literals, the
//! not-authenticated, authenticated and selected states, and the selected mailbox's
//! view kept in step with the store through the change bus.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::sasl::{self, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Flow, LineProtocol, Read, drive};
use agora_service::login;
use agora_service::sasl::LineChallenger;
use agora_store::{Account, Change, Flags, Mailbox, SpecialUse, Store, StoreError};
use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::command::{self, Command, CommandKind, StatusItem, literal_suffix};
use crate::selected::Selected;

/// Longest line (literals excluded).
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub allow_plaintext: bool,
    /// Largest literal (and so message) accepted.
    pub max_literal: usize,
    pub max_errors: u32,
    pub max_sessions_per_user: usize,
    /// The longest one IDLE may last.
    pub idle_timeout: std::time::Duration,
    /// How often an idling client hears `* OK Still here`.
    pub idle_keepalive: std::time::Duration,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            allow_plaintext: false,
            max_literal: 50 * 1024 * 1024,
            max_errors: 20,
            max_sessions_per_user: 100,
            idle_timeout: std::time::Duration::from_secs(7200),
            idle_keepalive: std::time::Duration::from_secs(120),
        }
    }
}

pub struct Session {
    pub(crate) cfg: Arc<ImapConfig>,
    dir: Directory,
    pub(crate) store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    pub(crate) account: Option<Account>,
    pub(crate) selected: Option<Selected>,
    /// Changes of the selected mailbox (subscribed at SELECT).
    pub(crate) bus: Option<broadcast::Receiver<Change>>,
    errors: u32,
    /// Enabled by ENABLE or by the first command that uses it (RFC 7162).
    pub(crate) condstore: bool,
    pub(crate) qresync: bool,
    /// The selected mailbox changed since the view last caught up.
    pub(crate) dirty: bool,
    /// Searches kept up to date (RFC 5267 CONTEXT=SEARCH/SORT).
    pub(crate) updates: Vec<crate::mailbox::Update>,
    /// NOTIFY SET in force (RFC 5465).
    pub(crate) watch: Option<Box<crate::notify::Watch>>,
    /// UTF8=ACCEPT (RFC 6855): names and strings travel as UTF-8.
    pub(crate) utf8: bool,
    /// ENABLE IMAP4rev2 (RFC 9051): no \Recent, ESEARCH for every SEARCH.
    pub(crate) rev2: bool,
    sessions: UserSessions,
    /// This session's place in its user's session count, held while logged in.
    slot: Option<SessionSlot>,
    /// Who this user is for ACLs: login, groups, `authenticated`, `anyone`.
    pub(crate) idents: Vec<String>,
}

/// A mailbox as a command reaches it: its own or another user's through an ACL.
pub(crate) struct Opened {
    pub mailbox: Mailbox,
    pub rights: crate::acl::Rights,
    /// Another account's mailbox: \Seen is this user's own.
    pub shared: bool,
    /// The owner's login (for GETACL).
    pub owner: String,
}

/// Logged-in IMAP sessions per account, shared by every session of the service.
pub type UserSessions = agora_service::leases::Leases;

/// One counted session; dropping it (the session ends) gives the place back.
pub type SessionSlot = agora_service::leases::Lease;

/// Splits IMAP flag names into system flags and keywords; \Recent and unknown
/// backslash flags are ignored.
pub(crate) fn parse_flags(names: &[String]) -> (Flags, Vec<String>) {
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

/// MAILBOXID (RFC 8474): stable across RENAME, never reused (UIDVALIDITY is unique).
pub(crate) fn mailbox_id(mb: &Mailbox) -> String {
    format!("F{:08x}{:x}", mb.uidvalidity, mb.id)
}

/// Converts every mailbox name a command carries from modified UTF-7 to UTF-8 (LIST
/// patterns that do not decode are kept as they are: they only fail to match).
fn names_from_mutf7(kind: CommandKind) -> Option<CommandKind> {
    use CommandKind as K;
    let d = |s: String| crate::mutf7::decode(&s);
    let pat = |s: String| crate::mutf7::decode(&s).unwrap_or(s);
    Some(match kind {
        K::Select { mailbox, condstore, qresync } => K::Select { mailbox: d(mailbox)?, condstore, qresync },
        K::Examine { mailbox, condstore, qresync } => K::Examine { mailbox: d(mailbox)?, condstore, qresync },
        K::Create { mailbox, special_use } => K::Create { mailbox: d(mailbox)?, special_use },
        K::Delete(m) => K::Delete(d(m)?),
        K::Rename { from, to } => K::Rename { from: d(from)?, to: d(to)? },
        K::Subscribe(m) => K::Subscribe(d(m)?),
        K::Unsubscribe(m) => K::Unsubscribe(d(m)?),
        K::List { reference, patterns, options } => {
            K::List { reference: pat(reference), patterns: patterns.into_iter().map(pat).collect(), options }
        }
        K::Lsub { reference, pattern } => K::Lsub { reference: pat(reference), pattern: pat(pattern) },
        K::Status { mailbox, items } => K::Status { mailbox: d(mailbox)?, items },
        K::Append { mailbox, messages } => K::Append { mailbox: d(mailbox)?, messages },
        K::Copy { uid, set, mailbox } => K::Copy { uid, set, mailbox: d(mailbox)? },
        K::Move { uid, set, mailbox } => K::Move { uid, set, mailbox: d(mailbox)? },
        K::GetQuotaRoot(m) => K::GetQuotaRoot(d(m)?),
        K::Notify(Some(mut spec)) => {
            for (f, _) in &mut spec.groups {
                if let command::NotifyFilter::Subtree(l) | command::NotifyFilter::Mailboxes(l) = f {
                    for n in l.iter_mut() {
                        *n = d(std::mem::take(n))?;
                    }
                }
            }
            K::Notify(Some(spec))
        }
        K::SetMetadata { mailbox, entries } => {
            K::SetMetadata { mailbox: if mailbox.is_empty() { mailbox } else { d(mailbox)? }, entries }
        }
        K::GetMetadata { mailbox, max_size, depth, entries } => {
            K::GetMetadata { mailbox: if mailbox.is_empty() { mailbox } else { d(mailbox)? }, max_size, depth, entries }
        }
        K::ResetKey(m) => K::ResetKey(match m {
            Some(m) => Some(d(m)?),
            None => None,
        }),
        K::SetAcl { mailbox, identifier, rights } => K::SetAcl { mailbox: d(mailbox)?, identifier, rights },
        K::DeleteAcl { mailbox, identifier } => K::DeleteAcl { mailbox: d(mailbox)?, identifier },
        K::GetAcl(m) => K::GetAcl(d(m)?),
        K::ListRights { mailbox, identifier } => K::ListRights { mailbox: d(mailbox)?, identifier },
        K::MyRights(m) => K::MyRights(d(m)?),
        other => other,
    })
}

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
    pub fn new(
        cfg: Arc<ImapConfig>,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        sessions: UserSessions,
    ) -> Session {
        Session {
            cfg,
            dir,
            store,
            throttle,
            account: None,
            selected: None,
            bus: None,
            errors: 0,
            condstore: false,
            qresync: false,
            dirty: false,
            updates: Vec::new(),
            watch: None,
            utf8: false,
            rev2: false,
            sessions,
            slot: None,
            idents: Vec::new(),
        }
    }

    /// Not an `async fn`: a wrapper future would hold the session and connection a
    /// second time, for as long as the session lasts.
    pub fn run(self, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
        drive(self, conn)
    }

    fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.cfg.allow_plaintext
    }

    fn capabilities(&self, conn: &Conn) -> String {
        let mut caps = vec![
            "IMAP4rev1",
            "IMAP4rev2",
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
            "ENABLE",
            "CONDSTORE",
            "QRESYNC",
            "ESEARCH",
            "SEARCHRES",
            "BINARY",
            "MULTIAPPEND",
            "CATENATE",
            "STATUS=SIZE",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            "UTF8=ACCEPT",
            "OBJECTID",
            "SAVEDATE",
            "PREVIEW",
            "WITHIN",
            "ACL",
            "RIGHTS=texk",
            "SORT",
            "SORT=DISPLAY",
            "ESORT",
            "CONTEXT=SEARCH",
            "CONTEXT=SORT",
            "PARTIAL",
            "THREAD=ORDEREDSUBJECT",
            "THREAD=REFERENCES",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "URLAUTH",
            "URLAUTH=BINARY",
            "NOTIFY",
            "METADATA",
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
        if self.account.is_some() {
            caps.push("COMPRESS=DEFLATE");
        }
        let mut caps = caps.join(" ");
        caps.push_str(&format!(" APPENDLIMIT={}", self.cfg.max_literal));
        caps
    }

    pub(crate) fn bad(&mut self, conn: &mut Conn, tag: &str, msg: &str) -> Flow {
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
        let kind_copy = match &cmd.kind {
            K::GetAcl(_) | K::MyRights(_) | K::ListRights { .. } => Some(cmd.kind.clone()),
            _ => None,
        };
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
            K::Notify(spec) if authed => return self.notify(conn, &tag, spec).await,
            K::SetMetadata { mailbox, entries } if authed => {
                return self.set_metadata(conn, &tag, &mailbox, entries).await;
            }
            K::GetMetadata { mailbox, max_size, depth, entries } if authed => {
                return self.get_metadata(conn, &tag, &mailbox, max_size, depth, &entries).await;
            }
            K::GenUrlAuth(urls) if authed => return self.gen_url_auth(conn, &tag, &urls).await,
            K::ResetKey(mailbox) if authed => return self.reset_key(conn, &tag, mailbox.as_deref()).await,
            K::UrlFetch(urls) if authed => return self.url_fetch(conn, &tag, &urls).await,
            K::Namespace if authed => {
                conn.queue(
                    format!(
                        "* NAMESPACE ((\"\" \"/\")) ((\"{}/\" \"/\")) ((\"{}/\" \"/\"))\r\n{tag} OK Namespace completed\r\n",
                        crate::acl::OTHER_USERS,
                        crate::acl::PUBLIC_FOLDERS
                    )
                    .as_bytes(),
                );
            }
            K::Enable(caps) if authed => {
                let mut enabled = Vec::new();
                for c in caps {
                    let c = c.to_ascii_uppercase();
                    match c.as_str() {
                        "CONDSTORE" if !self.condstore => self.condstore = true,
                        "QRESYNC" if !self.qresync => {
                            self.qresync = true;
                            self.condstore = true;
                        }
                        "UTF8=ACCEPT" if !self.utf8 => self.utf8 = true,
                        "IMAP4REV2" if !self.rev2 => self.rev2 = true,
                        _ => continue,
                    }
                    enabled.push(if c == "IMAP4REV2" { "IMAP4rev2".into() } else { c });
                }
                conn.queue(
                    format!(
                        "* ENABLED{}{}\r\n{tag} OK Enabled\r\n",
                        if enabled.is_empty() { "" } else { " " },
                        enabled.join(" ")
                    )
                    .as_bytes(),
                );
            }
            K::Select { mailbox, condstore, qresync } if authed => {
                return self.select(conn, &tag, &mailbox, false, condstore, qresync).await;
            }
            K::Examine { mailbox, condstore, qresync } if authed => {
                return self.select(conn, &tag, &mailbox, true, condstore, qresync).await;
            }
            K::Create { mailbox, .. }
                if authed && crate::acl::split_public(mailbox.trim_end_matches('/')).is_some() =>
            {
                return self.create_public(conn, &tag, mailbox.trim_end_matches('/')).await;
            }
            K::Delete(mailbox) if authed && crate::acl::split_public(&mailbox).is_some() => {
                return self.delete_public(conn, &tag, &mailbox).await;
            }
            K::Rename { from, to }
                if authed && crate::acl::split_public(&from).is_some() && crate::acl::split_public(&to).is_some() =>
            {
                return self.rename_public(conn, &tag, &from, &to).await;
            }
            K::Create { mailbox, .. } | K::Delete(mailbox) if authed && crate::acl::foreign(&mailbox) => {
                conn.queue(format!("{tag} NO [NOPERM] Mailboxes here are managed by their owners\r\n").as_bytes());
            }
            K::Rename { from, to } if authed && (crate::acl::foreign(&from) || crate::acl::foreign(&to)) => {
                conn.queue(format!("{tag} NO [NOPERM] Mailboxes here are managed by their owners\r\n").as_bytes());
            }
            K::Create { mailbox, special_use } if authed => {
                let name = mailbox.trim_end_matches('/').to_string();
                // CREATE-SPECIAL-USE (RFC 6154 §5.2): one use per mailbox, from the known ones.
                let su = special_use.first().and_then(|s| SpecialUse::parse(s));
                if special_use.len() > 1 || (!special_use.is_empty() && su.is_none()) {
                    conn.queue(format!("{tag} NO [USEATTR] Unsupported special-use attribute\r\n").as_bytes());
                    return Flow::Continue;
                }
                match self.store.create_mailbox(self.account_id(), &name, su).await {
                    Ok(mb) => {
                        let line = format!("{tag} OK [MAILBOXID ({})] CREATE completed\r\n", mailbox_id(&mb));
                        conn.queue(line.as_bytes());
                    }
                    Err(e) => self.reply_store(conn, &tag, Err(e), "CREATE"),
                }
            }
            K::Delete(name) if authed => {
                let r = self.store.delete_mailbox(self.account_id(), &name).await;
                if self.selected.as_ref().is_some_and(|s| s.mailbox.name == name) && r.is_ok() {
                    self.deselect();
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
            K::Close | K::Unselect if selected => return self.close(conn, &tag, is_close).await,
            K::Expunge { uids } if selected => return self.expunge(conn, &tag, uids).await,
            K::Search { uid, key, charset, ret } if selected => {
                if charset.as_deref().is_some_and(|c| !agora_store::text::known_charset(c)) {
                    conn.queue(crate::response::bad_charset(&tag).as_bytes());
                    return Flow::Continue;
                }
                return self.search(conn, &tag, uid, ret, key).await;
            }
            K::Sort { uid, ret, criteria, charset, key } if selected => {
                return self.sort(conn, &tag, uid, ret, &criteria, &charset, key).await;
            }
            K::CancelUpdate(tags) if selected => return self.cancel_update(conn, &tag, &tags),
            K::Thread { uid, algorithm, charset, key } if selected => {
                return self.thread(conn, &tag, uid, algorithm, &charset, key).await;
            }
            K::Fetch { uid, set, atts, changed_since, vanished } if selected => {
                return self.fetch(conn, &tag, uid, &set, atts, changed_since, vanished).await;
            }
            K::Store { uid, set, mode, silent, flags, unchanged_since } if selected => {
                return self.store_cmd(conn, &tag, uid, &set, mode, silent, &flags, unchanged_since).await;
            }
            K::Copy { uid, set, mailbox } if selected => {
                return self.copy(conn, &tag, uid, &set, &mailbox, false).await;
            }
            K::Move { uid, set, mailbox } if selected => return self.copy(conn, &tag, uid, &set, &mailbox, true).await,
            K::GetQuotaRoot(name) if authed => match self.store.mailbox(self.account_id(), &name).await {
                Ok(Some(mb)) => {
                    let quota = self.quota_line().await;
                    let mut out = b"* QUOTAROOT ".to_vec();
                    crate::response::string(&mut out, mb.name.as_bytes());
                    out.extend_from_slice(if quota.is_some() { b" \"\"\r\n" } else { b"\r\n" });
                    out.extend_from_slice(quota.unwrap_or_default().as_bytes());
                    out.extend_from_slice(format!("{tag} OK Getquotaroot completed\r\n").as_bytes());
                    conn.queue(&out);
                }
                _ => conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes()),
            },
            K::GetQuota(root) if authed => match self.quota_line().await {
                Some(line) if root.is_empty() => {
                    conn.queue(format!("{line}{tag} OK Getquota completed\r\n").as_bytes());
                }
                _ => conn.queue(format!("{tag} NO [NONEXISTENT] No such quota root\r\n").as_bytes()),
            },
            K::SetAcl { mailbox, identifier, rights } if authed => {
                return self.set_acl(conn, &tag, &mailbox, &identifier, Some(&rights)).await;
            }
            K::DeleteAcl { mailbox, identifier } if authed => {
                return self.set_acl(conn, &tag, &mailbox, &identifier, None).await;
            }
            K::GetAcl(mailbox) | K::MyRights(mailbox) | K::ListRights { mailbox, .. } if authed => {
                return self.show_acl(conn, &tag, &mailbox, &kind_copy).await;
            }
            K::Compress(mech) if authed => {
                if conn.is_compressed() {
                    conn.queue(format!("{tag} NO [COMPRESSIONACTIVE] Compression is already on\r\n").as_bytes());
                } else if mech != "DEFLATE" {
                    return self.bad(conn, &tag, "Unknown compression mechanism");
                } else {
                    conn.queue(format!("{tag} OK DEFLATE active\r\n").as_bytes());
                    if conn.start_deflate().await.is_err() {
                        return Flow::Close;
                    }
                }
            }
            K::SetQuota { .. } if authed => {
                conn.queue(format!("{tag} NO [NOPERM] Quotas are set by the administrator\r\n").as_bytes());
            }
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

    pub(crate) fn account_id(&self) -> i64 {
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
        let initial = match initial.as_deref() {
            None => None,
            Some(s) => match sasl::decode_line(s) {
                Some(v) => Some(v),
                None => return self.bad(conn, tag, "Invalid base64"),
            },
        };
        let step = sasl::run(&self.dir.clone(), mech, initial, &mut LineChallenger::new(conn, "+ ", MAX_LINE)).await;
        match step {
            Step::Malformed("connection lost") => Flow::Close,
            Step::Malformed(why) => self.bad(conn, tag, why),
            other => self.finish_auth(conn, tag, other).await,
        }
    }

    async fn finish_auth(&mut self, conn: &mut Conn, tag: &str, step: Step) -> Flow {
        match step {
            Step::Success(account) => {
                let Some(slot) = self.sessions.take("imap", account.id, self.cfg.max_sessions_per_user).await else {
                    tracing::warn!("imap: {} refused: too many sessions", account.login);
                    conn.queue(format!("{tag} NO [LIMIT] Too many sessions for this user\r\n").as_bytes());
                    return Flow::Continue;
                };
                self.slot = Some(slot);
                login::succeeded(&self.throttle, conn, "imap", &account.login);
                let groups = self.store.groups().await.unwrap_or_default();
                self.idents = crate::acl::identifiers(&account.login, &groups);
                self.account = Some(*account);
                let caps = self.capabilities(conn);
                conn.queue(format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n").as_bytes());
            }
            Step::Failed { login } => {
                login::failed(&self.throttle, conn.peer.ip(), "imap", login.as_deref()).await;
                conn.queue(format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n").as_bytes());
            }
            Step::Malformed(why) => return self.bad(conn, tag, why),
            Step::Challenge(_) => return Flow::Close,
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
            let mut named: Vec<(String, Option<agora_store::SpecialUse>)> =
                boxes.iter().map(|m| (m.name.clone(), m.special_use)).collect();
            // Other users' mailboxes this user may see (the l right), in their namespace.
            for sh in self.store.shared_with(account, &self.idents).await.unwrap_or_default() {
                if crate::acl::Rights::lenient(&sh.rights).has('l') {
                    named.push((crate::acl::shared_name(&sh.owner, &sh.mailbox.name), None));
                }
            }
            // The public folders this user may see, in theirs.
            for p in self.store.public_with(&self.idents).await.unwrap_or_default() {
                if crate::acl::Rights::lenient(&p.rights).has('l') {
                    named.push((crate::acl::public_name(&p.mailbox.name), None));
                }
            }
            for e in crate::list::list(&req, &named, &subs) {
                out.extend_from_slice(format!("* {verb} ({}) \"/\" ", e.attrs.join(" ")).as_bytes());
                self.name_out(&mut out, &e.name);
                if e.childinfo {
                    out.extend_from_slice(b" (\"CHILDINFO\" (\"SUBSCRIBED\"))");
                }
                out.extend_from_slice(b"\r\n");
                if !status.is_empty() && e.selectable {
                    let line = match boxes.iter().find(|m| m.name == e.name) {
                        Some(mb) => self.status_line(&mb.name, mb, status, false).await,
                        // Shared and public mailboxes: STATUS where the user may read
                        // (RFC 5819 §2), with this reader's own \Seen.
                        None => match self.open_mailbox(&e.name).await {
                            Ok(Some(o)) if o.rights.has('r') => {
                                self.status_line(&e.name, &o.mailbox, status, o.shared).await
                            }
                            _ => Ok(Vec::new()),
                        },
                    };
                    match line {
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
        let opened = match self.open_mailbox(name).await {
            Ok(Some(o)) => o,
            _ => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if !opened.rights.has('r') {
            conn.queue(format!("{tag} NO [NOPERM] No right to read this mailbox\r\n").as_bytes());
            return Flow::Continue;
        }
        match self.status_line(name, &opened.mailbox, items, opened.shared).await {
            Ok(mut line) => {
                line.extend_from_slice(format!("{tag} OK Status completed\r\n").as_bytes());
                conn.queue(&line);
                Flow::Continue
            }
            Err(why) => self.bad(conn, tag, why),
        }
    }

    /// Resolves a mailbox name: one of the user's own, or another user's under
    /// "Other Users/" with the rights its ACL gives. A mailbox the user may neither look
    /// up nor read does not exist for them.
    pub(crate) async fn open_mailbox(&self, name: &str) -> Result<Option<Opened>, StoreError> {
        use crate::acl::Rights;
        let me = self.account.as_ref().map(|a| a.login.clone()).unwrap_or_default();
        if let Some(path) = crate::acl::split_public(name) {
            let Some(owner) = self.store.account_by_login(agora_store::PUBLIC_OWNER).await? else { return Ok(None) };
            let Some(mailbox) = self.store.mailbox(owner.id, path).await? else { return Ok(None) };
            let rights = self.rights_on(mailbox.id).await?;
            if !rights.has('l') && !rights.has('r') {
                return Ok(None);
            }
            return Ok(Some(Opened { mailbox, rights, shared: true, owner: owner.login }));
        }
        if let Some((owner, rest)) = crate::acl::split_shared(name) {
            let Some(account) = self.store.account_by_login(owner).await? else { return Ok(None) };
            if account.id == self.account_id() {
                return Ok(None);
            }
            let Some(mailbox) = self.store.mailbox(account.id, rest).await? else { return Ok(None) };
            let rights = self.rights_on(mailbox.id).await?;
            if !rights.has('l') && !rights.has('r') {
                return Ok(None);
            }
            return Ok(Some(Opened { mailbox, rights, shared: true, owner: account.login }));
        }
        Ok(self.store.mailbox(self.account_id(), name).await?.map(|mailbox| Opened {
            mailbox,
            rights: Rights::all(),
            shared: false,
            owner: me,
        }))
    }

    /// Administrators manage every public folder.
    fn is_admin(&self) -> bool {
        self.account.as_ref().is_some_and(|a| a.role == agora_store::Role::Admin)
    }

    /// Whether this user may make a public folder at `path`: administrators anywhere,
    /// others with the k right on its parent (RFC 4314 §4).
    async fn may_create_public(&self, path: &str) -> bool {
        if self.is_admin() {
            return true;
        }
        let Some((parent, _)) = path.rsplit_once('/') else { return false };
        match self.open_mailbox(&crate::acl::public_name(parent)).await {
            Ok(Some(p)) => p.rights.has('k'),
            _ => false,
        }
    }

    /// CREATE under `Public Folders/`: a new folder with its parent's permissions and
    /// the newsgroup its path gives.
    async fn create_public(&mut self, conn: &mut Conn, tag: &str, name: &str) -> Flow {
        let path = crate::acl::split_public(name).unwrap_or_default().to_string();
        if !self.may_create_public(&path).await {
            conn.queue(format!("{tag} NO [NOPERM] No right to create folders here\r\n").as_bytes());
            return Flow::Continue;
        }
        let folder =
            agora_store::PublicFolder { newsgroup: agora_store::newsgroup_name(&path), path, ..Default::default() };
        let made = match self.store.add_public_folder(folder.clone()).await {
            // The newsgroup name may be taken: the folder is made without one.
            Err(StoreError::Exists(what)) if what.contains("newsgroup") => {
                self.store.add_public_folder(agora_store::PublicFolder { newsgroup: None, ..folder }).await
            }
            other => other,
        };
        match made {
            Ok(f) => {
                let id = self.store.mailbox_by_id(f.mailbox).await.ok().flatten().map(|m| mailbox_id(&m));
                let code = id.map_or(String::new(), |id| format!("[MAILBOXID ({id})] "));
                conn.queue(format!("{tag} OK {code}CREATE completed\r\n").as_bytes());
            }
            Err(StoreError::Exists(_)) => {
                conn.queue(format!("{tag} NO [ALREADYEXISTS] Mailbox already exists\r\n").as_bytes())
            }
            Err(StoreError::NotFound(_)) => {
                conn.queue(format!("{tag} NO [NONEXISTENT] The parent folder does not exist\r\n").as_bytes())
            }
            Err(e) => conn.queue(format!("{tag} NO {e}\r\n").as_bytes()),
        }
        Flow::Continue
    }

    /// DELETE of a public folder: with the x right on it, and no subfolders.
    async fn delete_public(&mut self, conn: &mut Conn, tag: &str, name: &str) -> Flow {
        let admin = self.is_admin();
        let opened = match self.open_mailbox(name).await {
            Ok(Some(o)) => o,
            _ => {
                conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
                return Flow::Continue;
            }
        };
        if !admin && !opened.rights.has('x') {
            conn.queue(format!("{tag} NO [NOPERM] No right to delete this folder\r\n").as_bytes());
            return Flow::Continue;
        }
        match self.store.remove_public_folder(crate::acl::split_public(name).unwrap_or_default()).await {
            Ok(()) => conn.queue(format!("{tag} OK DELETE completed\r\n").as_bytes()),
            Err(StoreError::Invalid(_)) => {
                conn.queue(format!("{tag} NO [HASCHILDREN] Delete its subfolders first\r\n").as_bytes())
            }
            Err(e) => conn.queue(format!("{tag} NO {e}\r\n").as_bytes()),
        }
        Flow::Continue
    }

    /// RENAME within `Public Folders/`: the x right on the folder, and leave to create
    /// at the destination.
    async fn rename_public(&mut self, conn: &mut Conn, tag: &str, from: &str, to: &str) -> Flow {
        let admin = self.is_admin();
        let (src, dst) = (
            crate::acl::split_public(from).unwrap_or_default().to_string(),
            crate::acl::split_public(to).unwrap_or_default().to_string(),
        );
        let may_take = admin || matches!(self.open_mailbox(from).await, Ok(Some(o)) if o.rights.has('x'));
        if !may_take || !self.may_create_public(&dst).await {
            conn.queue(format!("{tag} NO [NOPERM] No right to move this folder there\r\n").as_bytes());
            return Flow::Continue;
        }
        match self.store.rename_public_folder(&src, &dst).await {
            Ok(()) => conn.queue(format!("{tag} OK RENAME completed\r\n").as_bytes()),
            Err(StoreError::Exists(_)) => {
                conn.queue(format!("{tag} NO [ALREADYEXISTS] Mailbox already exists\r\n").as_bytes())
            }
            Err(StoreError::NotFound(_)) => conn.queue(format!("{tag} NO [NONEXISTENT] No such folder\r\n").as_bytes()),
            Err(e) => conn.queue(format!("{tag} NO {e}\r\n").as_bytes()),
        }
        Flow::Continue
    }

    /// What this user's identifiers are given on a mailbox by its ACL.
    async fn rights_on(&self, mailbox: agora_store::MailboxId) -> Result<crate::acl::Rights, StoreError> {
        let acl = self.store.acl(mailbox).await?;
        Ok(crate::acl::Rights::lenient(&agora_directory::granted(&acl, &self.idents)))
    }

    /// SETACL (rights given) and DELETEACL (None), RFC 4314 §3.1-3.2.
    async fn set_acl(&mut self, conn: &mut Conn, tag: &str, name: &str, ident: &str, rights: Option<&str>) -> Flow {
        use crate::acl::Rights;
        let Ok(Some(opened)) = self.open_mailbox(name).await else {
            conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
            return Flow::Continue;
        };
        if !opened.rights.has('a') {
            conn.queue(format!("{tag} NO [NOPERM] No right to administer this mailbox\r\n").as_bytes());
            return Flow::Continue;
        }
        let ident = ident.to_ascii_lowercase();
        if ident == opened.owner {
            conn.queue(format!("{tag} NO [CANNOT] The owner always has every right\r\n").as_bytes());
            return Flow::Continue;
        }
        let known = ident == "anyone"
            || ident == "authenticated"
            || matches!(
                self.store.lookup_address(&ident).await,
                Ok(agora_store::AddressEntry::Account(_) | agora_store::AddressEntry::Group(_))
            );
        if !known {
            conn.queue(format!("{tag} NO [NONEXISTENT] No such user or group: {ident}\r\n").as_bytes());
            return Flow::Continue;
        }
        let new = match rights {
            None => Rights::default(),
            Some(text) => {
                let (op, letters) = match text.chars().next() {
                    Some(c @ ('+' | '-')) => (Some(c), &text[1..]),
                    _ => (None, text),
                };
                let Some(given) = Rights::parse(letters) else {
                    return self.bad(conn, tag, "Unknown right");
                };
                let current = self
                    .store
                    .acl(opened.mailbox.id)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .find(|(i, _)| *i == ident)
                    .map_or(Rights::default(), |(_, r)| Rights::lenient(&r));
                match op {
                    Some('+') => current.union(given),
                    Some(_) => current.minus(given),
                    None => given,
                }
            }
        };
        let text = new.text();
        let r = self.store.set_acl(opened.mailbox.id, &ident, (!new.is_empty()).then_some(text.as_str())).await;
        self.reply_store(conn, tag, r, if rights.is_some() { "SETACL" } else { "DELETEACL" });
        Flow::Continue
    }

    /// GETACL, MYRIGHTS and LISTRIGHTS (RFC 4314 §3.3-3.5).
    async fn show_acl(&mut self, conn: &mut Conn, tag: &str, name: &str, kind: &Option<CommandKind>) -> Flow {
        let Ok(Some(opened)) = self.open_mailbox(name).await else {
            conn.queue(format!("{tag} NO [NONEXISTENT] Mailbox does not exist\r\n").as_bytes());
            return Flow::Continue;
        };
        let mut out = Vec::new();
        match kind {
            Some(CommandKind::MyRights(_)) => {
                out.extend_from_slice(b"* MYRIGHTS ");
                self.name_out(&mut out, name);
                out.extend_from_slice(
                    format!(" {}\r\n{tag} OK Myrights completed\r\n", opened.rights.text()).as_bytes(),
                );
            }
            _ if !opened.rights.has('a') => {
                out.extend_from_slice(format!("{tag} NO [NOPERM] No right to administer this mailbox\r\n").as_bytes());
            }
            Some(CommandKind::ListRights { identifier, .. }) => {
                out.extend_from_slice(b"* LISTRIGHTS ");
                self.name_out(&mut out, name);
                out.push(b' ');
                crate::response::string(&mut out, identifier.as_bytes());
                if identifier.eq_ignore_ascii_case(&opened.owner) {
                    out.extend_from_slice(format!(" {}", crate::acl::ALL).as_bytes());
                } else {
                    out.extend_from_slice(b" \"\"");
                    for c in crate::acl::ALL.chars() {
                        out.extend_from_slice(format!(" {c}").as_bytes());
                    }
                }
                out.extend_from_slice(format!("\r\n{tag} OK Listrights completed\r\n").as_bytes());
            }
            _ => {
                out.extend_from_slice(b"* ACL ");
                self.name_out(&mut out, name);
                out.push(b' ');
                crate::response::string(&mut out, opened.owner.as_bytes());
                out.extend_from_slice(format!(" {}", crate::acl::ALL).as_bytes());
                for (ident, rights) in self.store.acl(opened.mailbox.id).await.unwrap_or_default() {
                    out.push(b' ');
                    crate::response::string(&mut out, ident.as_bytes());
                    out.extend_from_slice(format!(" {rights}").as_bytes());
                }
                out.extend_from_slice(format!("\r\n{tag} OK Getacl completed\r\n").as_bytes());
            }
        }
        conn.queue(&out);
        Flow::Continue
    }

    /// A mailbox name as this session sends it (UTF-8 or modified UTF-7), quoted.
    pub(crate) fn name_out(&self, out: &mut Vec<u8>, name: &str) {
        if self.utf8 {
            crate::response::string(out, name.as_bytes());
        } else {
            crate::response::string(out, crate::mutf7::encode(name).as_bytes());
        }
    }

    /// `* QUOTA "" (STORAGE used limit)` in KiB (RFC 9208), if the account has a quota.
    async fn quota_line(&self) -> Option<String> {
        let a = self.store.account(self.account_id()).await.ok()??;
        (a.quota > 0).then(|| format!("* QUOTA \"\" (STORAGE {} {})\r\n", a.used.div_ceil(1024), a.quota / 1024))
    }

    /// The untagged STATUS response for a mailbox (STATUS and LIST-STATUS), named as
    /// the client named it. For a shared mailbox \Seen is the reader's own.
    pub(crate) async fn status_line(
        &self,
        name: &str,
        mb: &Mailbox,
        items: &[StatusItem],
        shared: bool,
    ) -> Result<Vec<u8>, &'static str> {
        let mut list = self.store.message_list(mb.id).await.unwrap_or_default();
        if shared {
            let seen = self.store.private_seen(mb.id, self.account_id()).await.unwrap_or_default();
            for m in &mut list {
                m.flags = m.flags.difference(Flags::SEEN);
                if seen.binary_search(&m.uid).is_ok() {
                    m.flags = m.flags.union(Flags::SEEN);
                }
            }
        }
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
                StatusItem::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highestmodseq),
                StatusItem::AppendLimit => format!("APPENDLIMIT {}", self.cfg.max_literal),
                StatusItem::MailboxId => format!("MAILBOXID ({})", mailbox_id(mb)),
            });
        }
        let mut out = b"* STATUS ".to_vec();
        self.name_out(&mut out, name);
        out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
        Ok(out)
    }

    async fn idle(&mut self, conn: &mut Conn, tag: &str) -> Flow {
        conn.set_wait(Some(self.cfg.idle_timeout));
        let flow = self.idling(conn, tag).await;
        conn.set_wait(None);
        flow
    }

    async fn idling(&mut self, conn: &mut Conn, tag: &str) -> Flow {
        if conn.send(b"+ idling\r\n").await.is_err() {
            return Flow::Close;
        }
        // The IDLE's own limit, apart from the session's: a client waiting for mail
        // sends nothing, and the keepalives below would otherwise restart every timer.
        let deadline = tokio::time::Instant::now() + self.cfg.idle_timeout;
        let mut keepalive = tokio::time::interval(self.cfg.idle_keepalive);
        keepalive.reset();
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
                c = wait_change(self.bus.as_mut()) => {
                    self.notice(c.as_ref());
                    None
                }
                _ = keepalive.tick() => {
                    if conn.send(b"* OK Still here\r\n").await.is_err() {
                        return Flow::Close;
                    }
                    None
                }
                _ = tokio::time::sleep_until(deadline) => Some(Read::Timeout),
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

/// The next change published on the bus; `None` if some were missed (lagged).
pub(crate) async fn wait_change(bus: Option<&mut broadcast::Receiver<Change>>) -> Option<Change> {
    let Some(bus) = bus else { return std::future::pending().await };
    match bus.recv().await {
        Ok(c) => Some(c),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

pub(crate) fn date_time_secs(d: command::DateTime) -> i64 {
    let days =
        agora_store::time::days_from_civil(i64::from(d.date.year), u32::from(d.date.month), u32::from(d.date.day));
    days * 86_400 + i64::from(d.hour) * 3600 + i64::from(d.minute) * 60 + i64::from(d.second)
        - i64::from(d.zone_minutes) * 60
}

#[async_trait]
impl LineProtocol for Session {
    fn name(&self) -> &'static str {
        "imap"
    }

    fn failed(&self, last_line: &[u8]) -> bool {
        // The tagged answer: "TAG NO …" or "TAG BAD …" (not "* NO", not "+").
        let mut words = last_line.splitn(3, |&b| b == b' ');
        let tag = words.next().unwrap_or_default();
        !matches!(tag, b"*" | b"+" | b"")
            && matches!(words.next(), Some(w) if w.eq_ignore_ascii_case(b"NO") || w.eq_ignore_ascii_case(b"BAD"))
    }

    fn max_line(&self) -> usize {
        MAX_LINE
    }

    fn greeting(&self, conn: &Conn) -> Vec<u8> {
        format!("* OK [CAPABILITY {}] Agora IMAP ready\r\n", self.capabilities(conn)).into_bytes()
    }

    fn listening(&self) -> bool {
        self.watch.is_some()
    }

    async fn unasked(&mut self) {
        self.next_notice().await
    }

    async fn tell(&mut self, conn: &mut Conn) -> Flow {
        self.tell_notices(conn).await
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
            Ok(mut cmd) => {
                // The store keeps UTF-8 names; without UTF8=ACCEPT they arrive in mUTF-7.
                if !self.utf8 {
                    match names_from_mutf7(cmd.kind) {
                        Some(k) => cmd.kind = k,
                        None => {
                            let line = format!("{} NO Mailbox name is not valid modified UTF-7\r\n", cmd.tag);
                            conn.queue(line.as_bytes());
                            return Flow::Continue;
                        }
                    }
                }
                if matches!(cmd.kind, CommandKind::Idle) && self.account.is_some() {
                    // Held for as long as the client idles: a future of its own, not
                    // one sized for the largest command.
                    return self.idle(conn, &cmd.tag).await;
                }
                Box::pin(self.handle(conn, cmd)).await
            }
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
    fn busy_goodbye(&self) -> Vec<u8> {
        b"* BYE [UNAVAILABLE] Too busy; try again later\r\n".to_vec()
    }
}

/// URLAUTH (RFC 4467, RFC 5524): the checks live in the store's `urlauth`, shared with
/// submission's BURL.
impl Session {
    fn login(&self) -> &str {
        self.account.as_ref().map_or("", |a| a.login.as_str())
    }

    async fn gen_url_auth(&mut self, conn: &mut Conn, tag: &str, urls: &[(String, String)]) -> Flow {
        let mut made = Vec::new();
        for (url, mech) in urls {
            if mech != "INTERNAL" {
                conn.queue(format!("{tag} NO Only the INTERNAL mechanism is offered\r\n").as_bytes());
                return Flow::Continue;
            }
            match agora_store::urlauth::generate(&*self.store, self.account_id(), self.login(), url).await {
                Ok(u) => made.push(u),
                Err(e) => {
                    let why = e.to_string().replace(['\r', '\n'], " ");
                    conn.queue(format!("{tag} NO [BADURL] {why}\r\n").as_bytes());
                    return Flow::Continue;
                }
            }
        }
        let mut out = b"* GENURLAUTH".to_vec();
        for u in &made {
            out.push(b' ');
            crate::response::string(&mut out, u.as_bytes());
        }
        out.extend_from_slice(format!("\r\n{tag} OK Genurlauth completed\r\n").as_bytes());
        conn.queue(&out);
        Flow::Continue
    }

    async fn reset_key(&mut self, conn: &mut Conn, tag: &str, mailbox: Option<&str>) -> Flow {
        match agora_store::urlauth::reset(&*self.store, self.account_id(), mailbox).await {
            Ok(true) => conn.queue(format!("{tag} OK [URLMECH INTERNAL] Keys reset\r\n").as_bytes()),
            Ok(false) => conn.queue(format!("{tag} NO [NONEXISTENT] No such mailbox\r\n").as_bytes()),
            Err(e) => {
                tracing::error!("imap: resetkey: {e}");
                conn.queue(format!("{tag} NO [SERVERBUG] Resetkey failed\r\n").as_bytes());
            }
        }
        Flow::Continue
    }

    async fn url_fetch(&mut self, conn: &mut Conn, tag: &str, urls: &[(String, crate::command::UrlWants)]) -> Flow {
        let now = agora_store::now();
        for (url, wants) in urls {
            let who = agora_store::urlauth::Fetcher::User(self.login());
            let got = match agora_store::urlauth::fetch(&*self.store, url, who, now).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::error!("imap: urlfetch: {e}");
                    None
                }
            };
            let mut out = b"* URLFETCH ".to_vec();
            crate::response::string(&mut out, url.as_bytes());
            out.push(b' ');
            match got {
                None => out.extend_from_slice(b"NIL"),
                Some(f) if !wants.extended => crate::response::literal(&mut out, &f.bytes()),
                Some(f) => {
                    let mut items: Vec<Vec<u8>> = Vec::new();
                    if wants.structure {
                        let mut s = b"BODYPARTSTRUCTURE ".to_vec();
                        let converted = if wants.binary { f.binary_part() } else { None };
                        match converted.as_ref().or(f.part()) {
                            Some(p) => crate::response::body_structure(&mut s, p, true),
                            None => s.extend_from_slice(b"NIL"),
                        }
                        items.push(s);
                    }
                    if wants.binary {
                        let mut s = b"BINARY ".to_vec();
                        match f.binary() {
                            Some(b) => {
                                s.extend_from_slice(format!("~{{{}}}\r\n", b.len()).as_bytes());
                                s.extend_from_slice(&b);
                            }
                            None => s.extend_from_slice(b"NIL"),
                        }
                        items.push(s);
                    }
                    if wants.body || (!wants.binary && !wants.structure) {
                        let mut s = b"BODY ".to_vec();
                        crate::response::literal(&mut s, &f.bytes());
                        items.push(s);
                    }
                    out.push(b'(');
                    out.extend_from_slice(&items.join(&b' '));
                    out.push(b')');
                }
            }
            out.extend_from_slice(b"\r\n");
            conn.queue(&out);
        }
        conn.queue(format!("{tag} OK Urlfetch completed\r\n").as_bytes());
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_per_user_are_counted() {
        let s = UserSessions::default();
        let a = s.take("imap", 1, 2).await.expect("first");
        let _b = s.take("imap", 1, 2).await.expect("second");
        assert!(s.take("imap", 1, 2).await.is_none(), "third over the limit");
        assert!(s.take("imap", 2, 2).await.is_some(), "other users are counted apart");
        drop(a);
        assert!(s.take("imap", 1, 2).await.is_some(), "a place comes back when a session ends");
    }

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
