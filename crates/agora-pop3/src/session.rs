//! The POP3 session (RFC 1939): AUTHORIZATION, TRANSACTION and UPDATE states over the
//! account's INBOX in the information store. Deletions happen only at QUIT.

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::sasl::{self, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Flow, LineProtocol, drive};
use agora_service::login;
use agora_service::sasl::LineChallenger;
use agora_store::{Account, FlagOp, Flags, MailboxId, Store, now};
use async_trait::async_trait;

use crate::codec::{self, Command, MAX_LINE};

#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Allow USER/PASS and PLAIN/LOGIN without TLS (off: only SCRAM before STLS).
    pub allow_plaintext: bool,
    /// Set \Seen on messages retrieved, at QUIT (as Dovecot does).
    pub mark_seen: bool,
    /// Leave-on-server policy: at QUIT, delete messages already retrieved (\Seen) that
    /// are older than this many days, even if the client never sends DELE.
    pub expire_days: Option<u32>,
    pub max_errors: u32,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Pop3Config { allow_plaintext: false, mark_seen: true, expire_days: None, max_errors: 10 }
    }
}

/// Maildrops held by a session: a second session on the same one gets `[IN-USE]`
/// (one lease of kind "pop3" per account).
pub type Locks = agora_service::leases::Leases;

struct Msg {
    uid: u32,
    size: u64,
    blob: String,
    internal_date: i64,
    seen: bool,
    deleted: bool,
    retrieved: bool,
}

struct Maildrop {
    account: Account,
    mailbox: MailboxId,
    uidvalidity: u32,
    msgs: Vec<Msg>,
    _lock: agora_service::leases::Lease,
}

pub struct Session {
    cfg: Arc<Pop3Config>,
    dir: Directory,
    store: Arc<dyn Store>,
    locks: Arc<Locks>,
    throttle: Arc<Throttle>,
    user: Option<String>,
    drop: Option<Maildrop>,
    errors: u32,
}

impl Session {
    pub fn new(
        cfg: Arc<Pop3Config>,
        dir: Directory,
        store: Arc<dyn Store>,
        locks: Arc<Locks>,
        throttle: Arc<Throttle>,
    ) -> Session {
        Session { cfg, dir, store, locks, throttle, user: None, drop: None, errors: 0 }
    }

    /// The session's future holds the session once (an `async fn` wrapper holds it twice).
    pub fn run(self, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
        drive(self, conn)
    }

    fn error(&mut self, conn: &mut Conn, msg: &str) -> Flow {
        self.errors += 1;
        conn.queue(msg.as_bytes());
        if self.errors >= self.cfg.max_errors {
            conn.queue(b"-ERR Too many bad commands, closing\r\n");
            return Flow::Close;
        }
        Flow::Continue
    }

    fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.cfg.allow_plaintext
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        let cmd = match codec::parse(line) {
            Ok(c) => c,
            Err(e) => return self.error(conn, &e.reply()),
        };
        match (self.drop.is_some(), cmd) {
            (_, Command::Capa) => {
                let mut caps =
                    vec!["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "UTF8", "IMPLEMENTATION Agora"]
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>();
                if self.drop.is_none() {
                    if self.plaintext_ok(conn) {
                        caps.push("USER".into());
                    }
                    let mechs: Vec<&str> =
                        Mechanism::offered(self.plaintext_ok(conn)).iter().map(|m| m.name()).collect();
                    caps.push(format!("SASL {}", mechs.join(" ")));
                    if conn.can_starttls() {
                        caps.push("STLS".into());
                    }
                }
                caps.push(match self.cfg.expire_days {
                    Some(d) => format!("EXPIRE {d}"),
                    None => "EXPIRE NEVER".into(),
                });
                let mut out = String::from("+OK Capability list follows\r\n");
                for c in caps {
                    out.push_str(&c);
                    out.push_str("\r\n");
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            (_, Command::Noop) => conn.queue(b"+OK\r\n"),
            (_, Command::Utf8) => conn.queue(b"+OK UTF8 enabled\r\n"),
            (false, Command::Quit) => {
                conn.queue(b"+OK Bye\r\n");
                return Flow::Close;
            }
            (true, Command::Quit) => return self.update(conn).await,
            (false, Command::Stls) => {
                if !conn.can_starttls() {
                    return self.error(conn, "-ERR TLS not available or already active\r\n");
                }
                if conn.send(b"+OK Begin TLS negotiation\r\n").await.is_err() {
                    return Flow::Close;
                }
                if let Err(e) = conn.start_tls().await {
                    tracing::debug!("pop3: {}: STLS handshake failed: {e}", conn.peer);
                    return Flow::Close;
                }
                self.user = None;
            }
            (false, Command::User(name)) => {
                if !self.plaintext_ok(conn) {
                    return self
                        .error(conn, "-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS\r\n");
                }
                self.user = Some(name);
                conn.queue(b"+OK\r\n");
            }
            (false, Command::Pass(pass)) => {
                let Some(user) = self.user.take() else {
                    return self.error(conn, "-ERR USER first\r\n");
                };
                let step = match self.dir.authenticate(&user, &pass).await {
                    Ok(Some(account)) => Step::Success(Box::new(account)),
                    _ => Step::Failed { login: Some(user) },
                };
                return self.finish_auth(conn, step).await;
            }
            (false, Command::Apop) => return self.error(conn, "-ERR APOP is not enabled\r\n"),
            (false, Command::Auth(None, _)) => {
                let mut out = String::from("+OK\r\n");
                for m in Mechanism::offered(self.plaintext_ok(conn)) {
                    out.push_str(m.name());
                    out.push_str("\r\n");
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            (false, Command::Auth(Some(mech), initial)) => return self.sasl(conn, &mech, initial).await,
            (true, Command::Stat) => {
                let Some(d) = self.drop.as_ref() else { return Flow::Close };
                let (n, size) = d.msgs.iter().filter(|m| !m.deleted).fold((0, 0), |(n, s), m| (n + 1, s + m.size));
                conn.queue(format!("+OK {n} {size}\r\n").as_bytes());
            }
            (true, Command::List(None)) => {
                let Some(d) = self.drop.as_ref() else { return Flow::Close };
                let mut out = format!("+OK {} messages\r\n", d.msgs.iter().filter(|m| !m.deleted).count());
                for (i, m) in d.msgs.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    out.push_str(&format!("{} {}\r\n", i + 1, m.size));
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            (true, Command::List(Some(n))) => match self.msg(n) {
                Some(m) => conn.queue(format!("+OK {n} {}\r\n", m.size).as_bytes()),
                None => return self.error(conn, "-ERR No such message\r\n"),
            },
            (true, Command::Uidl(None)) => {
                let Some(d) = self.drop.as_ref() else { return Flow::Close };
                let mut out = String::from("+OK\r\n");
                for (i, m) in d.msgs.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    out.push_str(&format!("{} {}\r\n", i + 1, uidl(d.uidvalidity, m.uid)));
                }
                out.push_str(".\r\n");
                conn.queue(out.as_bytes());
            }
            (true, Command::Uidl(Some(n))) => {
                let Some(v) = self.drop.as_ref().map(|d| d.uidvalidity) else { return Flow::Close };
                match self.msg(n) {
                    Some(m) => conn.queue(format!("+OK {n} {}\r\n", uidl(v, m.uid)).as_bytes()),
                    None => return self.error(conn, "-ERR No such message\r\n"),
                }
            }
            (true, Command::Retr(n)) => return self.retr(conn, n, None).await,
            (true, Command::Top(n, lines)) => return self.retr(conn, n, Some(lines)).await,
            (true, Command::Dele(n)) => {
                let Some(d) = self.drop.as_mut() else { return Flow::Close };
                match n.checked_sub(1).and_then(|i| d.msgs.get_mut(i as usize)) {
                    Some(m) if !m.deleted => {
                        m.deleted = true;
                        conn.queue(format!("+OK Message {n} deleted\r\n").as_bytes());
                    }
                    Some(_) => return self.error(conn, "-ERR Message already deleted\r\n"),
                    None => return self.error(conn, "-ERR No such message\r\n"),
                }
            }
            (true, Command::Rset) => {
                if let Some(d) = self.drop.as_mut() {
                    for m in &mut d.msgs {
                        m.deleted = false;
                    }
                }
                conn.queue(b"+OK\r\n");
            }
            (false, _) => return self.error(conn, "-ERR Not logged in\r\n"),
            (true, _) => return self.error(conn, "-ERR Already logged in\r\n"),
        }
        Flow::Continue
    }

    /// Message `n` (1-based), unless deleted.
    fn msg(&self, n: u32) -> Option<&Msg> {
        let d = self.drop.as_ref()?;
        n.checked_sub(1).and_then(|i| d.msgs.get(i as usize)).filter(|m| !m.deleted)
    }

    async fn retr(&mut self, conn: &mut Conn, n: u32, top: Option<u32>) -> Flow {
        let Some(m) = self.msg(n) else { return self.error(conn, "-ERR No such message\r\n") };
        let blob = m.blob.clone();
        let body = match self.store.read_blob(&blob).await {
            Ok(b) => b,
            Err(e) => {
                // Expunged over IMAP meanwhile: this message is gone, the session goes on.
                tracing::info!("pop3: message {n} no longer readable: {e}");
                conn.queue(b"-ERR Message no longer exists\r\n");
                return Flow::Continue;
            }
        };
        let mut block = Vec::with_capacity(body.len() + body.len() / 32 + 8);
        let dots = codec::write_multiline(&body, top, &mut block);
        if top.is_some() {
            conn.queue(b"+OK\r\n");
        } else {
            // The size given is that of the message as sent (line ends made CRLF),
            // before dot-stuffing: the block less its added dots and final ".\r\n".
            conn.queue(format!("+OK {} octets\r\n", block.len() - dots - 3).as_bytes());
            if let Some(d) = self.drop.as_mut()
                && let Some(msg) = d.msgs.get_mut(n as usize - 1)
            {
                msg.retrieved = true;
            }
        }
        conn.queue(&block);
        Flow::Continue
    }

    async fn sasl(&mut self, conn: &mut Conn, mech: &str, initial: Option<String>) -> Flow {
        let Some(mech) = Mechanism::parse(mech) else {
            return self.error(conn, "-ERR [AUTH] Unsupported authentication mechanism\r\n");
        };
        if mech.sends_password() && !self.plaintext_ok(conn) {
            return self.error(conn, "-ERR [AUTH] Plaintext authentication disallowed without TLS: use STLS\r\n");
        }
        let initial = match initial.as_deref() {
            None => None,
            Some(s) => match sasl::decode_line(s) {
                Some(v) => Some(v),
                None => return self.error(conn, "-ERR [AUTH] Invalid base64 in initial response\r\n"),
            },
        };
        let step = sasl::run(&self.dir.clone(), mech, initial, &mut LineChallenger::new(conn, "+ ", MAX_LINE)).await;
        match step {
            Step::Malformed("connection lost") => Flow::Close,
            Step::Malformed(why) => self.error(conn, &format!("-ERR [AUTH] {why}\r\n")),
            other => self.finish_auth(conn, other).await,
        }
    }

    async fn finish_auth(&mut self, conn: &mut Conn, step: Step) -> Flow {
        match step {
            Step::Success(account) => self.open_maildrop(conn, *account).await,
            Step::Failed { login } => {
                login::failed(&self.throttle, conn.peer.ip(), "pop3", login.as_deref()).await;
                self.error(conn, "-ERR [AUTH] Authentication failed\r\n")
            }
            Step::Malformed(why) => self.error(conn, &format!("-ERR [AUTH] {why}\r\n")),
            Step::Challenge(_) => Flow::Close,
        }
    }

    async fn open_maildrop(&mut self, conn: &mut Conn, account: Account) -> Flow {
        let Some(lock) = self.locks.take("pop3", account.id, 1).await else {
            return self.error(conn, "-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n");
        };
        let loaded = async {
            let mb = self
                .store
                .mailbox(account.id, "INBOX")
                .await?
                .ok_or_else(|| agora_store::StoreError::NotFound("INBOX".into()))?;
            let list = self.store.message_list(mb.id).await?;
            Ok::<_, agora_store::StoreError>((mb, list))
        }
        .await;
        let (mb, list) = match loaded {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("pop3: opening maildrop of {}: {e}", account.login);
                conn.queue(b"-ERR [SYS/TEMP] Cannot open the maildrop, try again later\r\n");
                return Flow::Continue;
            }
        };
        let msgs: Vec<Msg> = list
            .into_iter()
            .map(|m| Msg {
                uid: m.uid,
                size: m.size,
                blob: m.blob,
                internal_date: m.internal_date,
                seen: m.flags.contains(Flags::SEEN),
                deleted: false,
                retrieved: false,
            })
            .collect();
        let total: u64 = msgs.iter().map(|m| m.size).sum();
        conn.queue(format!("+OK Logged in, {} messages ({total} octets)\r\n", msgs.len()).as_bytes());
        login::succeeded(&self.throttle, conn, "pop3", &account.login);
        self.drop = Some(Maildrop { account, mailbox: mb.id, uidvalidity: mb.uidvalidity, msgs, _lock: lock });
        Flow::Continue
    }

    /// UPDATE state: remove what was deleted (and what the expiry policy removes), mark
    /// retrieved messages \Seen, then say goodbye.
    async fn update(&mut self, conn: &mut Conn) -> Flow {
        let Some(d) = self.drop.take() else { return Flow::Close };
        let cutoff = self.cfg.expire_days.map(|days| now() - i64::from(days) * 86_400);
        let doomed: Vec<u32> = d
            .msgs
            .iter()
            .filter(|m| m.deleted || cutoff.is_some_and(|c| (m.seen || m.retrieved) && m.internal_date < c))
            .map(|m| m.uid)
            .collect();
        let seen: Vec<u32> = if self.cfg.mark_seen {
            d.msgs.iter().filter(|m| m.retrieved && !m.seen && !doomed.contains(&m.uid)).map(|m| m.uid).collect()
        } else {
            Vec::new()
        };
        if !seen.is_empty()
            && let Err(e) = self.store.store_flags(d.mailbox, &seen, FlagOp::Add, Flags::SEEN, &[], None).await
        {
            tracing::warn!("pop3: marking messages of {} seen: {e}", d.account.login);
        }
        match self.store.expunge(d.mailbox, &doomed).await {
            Ok(removed) => {
                conn.queue(format!("+OK Logging out, {} messages deleted\r\n", removed.len()).as_bytes());
            }
            Err(e) => {
                tracing::error!("pop3: deleting messages of {}: {e}", d.account.login);
                conn.queue(b"-ERR [SYS/TEMP] Some deleted messages were not removed\r\n");
            }
        }
        Flow::Close
    }
}

#[async_trait]
impl LineProtocol for Session {
    fn name(&self) -> &'static str {
        "pop3"
    }

    fn failed(&self, last_line: &[u8]) -> bool {
        last_line.starts_with(b"-ERR")
    }

    fn max_line(&self) -> usize {
        MAX_LINE
    }

    fn greeting(&self, _conn: &Conn) -> Vec<u8> {
        b"+OK Agora POP3 server ready\r\n".to_vec()
    }

    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        self.command(conn, line).await
    }

    fn too_long(&mut self, conn: &mut Conn) -> Flow {
        self.error(conn, "-ERR Line too long\r\n")
    }

    fn timeout_reply(&self) -> Vec<u8> {
        b"-ERR Disconnected for inactivity\r\n".to_vec()
    }

    fn shutdown_reply(&self) -> Vec<u8> {
        b"-ERR [SYS/TEMP] Server shutting down\r\n".to_vec()
    }
    fn busy_goodbye(&self) -> Vec<u8> {
        b"-ERR [SYS/TEMP] Too busy; try again later\r\n".to_vec()
    }
}

/// Stable across sessions and restarts: UIDVALIDITY and UID, as IMAP sees them.
fn uidl(uidvalidity: u32, uid: u32) -> String {
    format!("{uidvalidity:08x}{uid:08x}")
}
