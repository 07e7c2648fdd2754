//! The ESMTP session (RFC 5321): inbound on 25 and submission (RFC 6409) on 587/465 with
//! AUTH (RFC 4954) and sender checks; state machine over a `Conn`, recipient checks
//! against the directory, durable delivery into the store (or the outbound queue)
//! before the 250.

use std::sync::Arc;

use agora_directory::sasl::{self, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_directory::{Directory, Recipient};
use agora_mail::{Intake, IntakeError, Mail, Origin, Policy, Rcpt};
use agora_net::{Conn, Flow, LineProtocol, Read, drive};
use agora_service::login;
use agora_service::sasl::LineChallenger;
use agora_store::{AddressEntry, Store, now};
use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::codec::{
    self, Command, DataDecoder, MAX_COMMAND_LINE, MAX_TEXT_LINE, MailParams, RcptParams, reply, reply_lines, sanitize,
};

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The name this server gives in its greeting and Received headers.
    pub hostname: String,
    /// Domain whose postmaster receives mail for the bare `<Postmaster>` (RFC 5321 §4.1.1.3).
    pub primary_domain: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Bad commands tolerated before the session is closed.
    pub max_errors: u32,
    /// Submission (587/465, RFC 6409): AUTH required, senders checked, relaying allowed.
    pub submission: bool,
    /// PLAIN and LOGIN before TLS (tests and trusted networks only).
    pub allow_plaintext: bool,
    /// Networks whose clients may relay without AUTH (address, prefix length).
    pub trusted_networks: Vec<(std::net::IpAddr, u8)>,
    /// Refuse mail failing DMARC when its domain publishes p=reject.
    pub dmarc_reject: bool,
    /// The most one message's SPF/DKIM/ARC/DMARC checks may take.
    pub check_budget: std::time::Duration,
    /// DKIM-sign mail from our users and trusted networks with the sender domain's keys.
    pub dkim_sign: bool,
    /// ARC-seal checked mail that we forward to other servers.
    pub arc_seal: bool,
    /// Where messages in transfer go once the shared memory budget is taken.
    pub spool: Option<std::path::PathBuf>,
}

/// True if `ip` lies in `net`/`prefix`.
pub fn in_network(ip: std::net::IpAddr, net: std::net::IpAddr, prefix: u8) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (V6(a), V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Memory for message data being received, shared by all sessions: a flood of large
/// messages gets `452 4.3.1` instead of exhausting the server. One permit is 1 KiB.
#[derive(Debug, Clone)]
pub struct MessageMemory(Arc<Semaphore>);

/// Permits are taken in steps of this many KiB.
const MEMORY_STEP_KIB: u32 = 64;

impl MessageMemory {
    pub fn new(bytes: usize) -> MessageMemory {
        let kib = (bytes / 1024).clamp(MEMORY_STEP_KIB as usize, Semaphore::MAX_PERMITS);
        MessageMemory(Arc::new(Semaphore::new(kib)))
    }
}

/// The memory one message holds; released when dropped.
#[derive(Debug, Default)]
struct Held {
    permits: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Held {
    /// Takes memory until `len` bytes are covered; false if the budget is exhausted.
    fn cover(&mut self, memory: &MessageMemory, len: usize) -> bool {
        while self.bytes < len {
            match Arc::clone(&memory.0).try_acquire_many_owned(MEMORY_STEP_KIB) {
                Ok(p) => {
                    self.permits.push(p);
                    self.bytes += MEMORY_STEP_KIB as usize * 1024;
                }
                Err(_) => return false,
            }
        }
        true
    }
}

/// Before a spilled message is read back: memory for all of it, or 452 (the spool
/// spares memory while a client is slow, not once the message is whole).
fn reclaim(dec: &mut DataDecoder, held: &mut Held, memory: &MessageMemory) {
    if dec.spilled() && !held.cover(memory, dec.len()) {
        tracing::warn!("smtp: no memory to read a spooled message back; refusing it with 452");
        dec.refuse_for_memory();
    }
}

/// Keeps a decoder within the memory it could get: past the shared budget the message
/// goes on in a spool file (or, with no spool, is refused with 452).
fn account(dec: &mut DataDecoder, held: &mut Held, memory: &MessageMemory, spool: Option<&std::path::Path>) {
    if dec.no_memory || dec.spilled() || held.cover(memory, dec.body.len()) {
        return;
    }
    match spool {
        Some(dir) if dec.spill_to(dir) => {
            tracing::debug!("smtp: message memory budget taken; a message goes to the spool")
        }
        _ => tracing::warn!("smtp: message memory budget exhausted; refusing a message with 452"),
    }
    if !dec.spilled() {
        dec.refuse_for_memory();
    }
    *held = Held::default();
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            primary_domain: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            submission: false,
            allow_plaintext: false,
            trusted_networks: Vec::new(),
            dmarc_reject: true,
            check_budget: std::time::Duration::from_secs(5),
            dkim_sign: true,
            arc_seal: true,
            spool: None,
        }
    }
}

/// One accepted recipient and where its copies go.
#[derive(Debug)]
struct AcceptedRcpt {
    address: String,
    params: RcptParams,
    accounts: Vec<i64>,
    external: Vec<String>,
    /// A public folder: its owning account and path.
    folder: Option<(i64, String)>,
}

#[derive(Debug, Default)]
struct Transaction {
    from: String,
    params: MailParams,
    rcpts: Vec<AcceptedRcpt>,
    /// A BDAT transfer under way, and the memory it holds.
    chunks: Option<(DataDecoder, Held)>,
}

pub struct Session {
    memory: MessageMemory,
    cfg: Arc<SmtpConfig>,
    mail: Arc<Mail>,
    dir: Directory,
    store: Arc<dyn Store>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    authenticated_as: Option<String>,
    account: Option<agora_store::Account>,
    throttle: Arc<Throttle>,
    /// RCPT commands this session has made, over all its transactions.
    rcpts_in_session: usize,
    /// X-LINK2STATE: where the other server is in proving its membership.
    link: Link,
}

/// X-LINK2STATE's progress in a session.
#[derive(Debug, Clone, Default)]
enum Link {
    #[default]
    None,
    /// Our proof sent; theirs awaited.
    Greeted { client: String, client_nonce: [u8; 16], server_nonce: [u8; 16] },
    /// A proven member of the organisation.
    Member(String),
}

/// A session may name this many times `max_recipients` recipients in all.
const RCPT_SESSION_FACTOR: usize = 10;
/// More Received headers than this means a mail loop (Postfix's hopcount_limit).
const MAX_HOPS: usize = 50;

/// Longest SASL response line accepted (RFC 4954 §4: at least 12288).
const MAX_AUTH_LINE: usize = 12288 + 2;

impl Session {
    /// Whether X-LINK2STATE is offered on this connection: this server is in a routing
    /// organisation, the session is TLS 1.3 (its proofs bind to it), and the client's
    /// address is one of the organisation's servers.
    async fn offered_to(&self, ip: std::net::IpAddr, bound: bool) -> bool {
        self.mail.config().routing.is_some()
            && bound
            && match self.mail.routing_table().await {
                Some(t) => self.mail.is_org_server(&t, ip).await,
                None => false,
            }
    }

    /// X-LINK2STATE: HELLO and PROVE (both sides prove they hold the organisation's
    /// secret), then DIGEST, TABLE (theirs merged here) and GET (ours: "250 LEN" and
    /// LEN octets).
    async fn link2state(&mut self, conn: &mut Conn, words: Vec<String>) -> Flow {
        use agora_mail::routing::{self, Side};
        let (Some(me), Some(cb)) = (self.mail.config().routing.clone(), conn.channel_binding().copied()) else {
            return self.error(conn, reply(502, "5.5.1", "Error: X-LINK2STATE is not offered here"));
        };
        if !self.offered_to(conn.peer.ip(), true).await {
            return self.error(conn, reply(502, "5.5.1", "Error: X-LINK2STATE is not offered here"));
        }
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let verb = w[0].to_ascii_uppercase();
        match (verb.as_str(), &self.link, w.len()) {
            ("HELLO", _, 3) => {
                let (Some(nonce), true) = (routing::unhex::<16>(w[2]), routing::valid_name(w[1])) else {
                    return self.error(conn, reply(501, "5.5.4", "Syntax: X-LINK2STATE HELLO node nonce"));
                };
                let server_nonce = routing::nonce();
                let p = routing::proof(&me.secret, Side::Server, &cb, (w[1], &nonce), (&me.node, &server_nonce));
                self.link = Link::Greeted { client: w[1].to_string(), client_nonce: nonce, server_nonce };
                let line = format!("250 {} {} {}\r\n", me.node, routing::hex(&server_nonce), routing::hex(&p));
                conn.queue(line.as_bytes());
            }
            ("PROVE", Link::Greeted { client, client_nonce, server_nonce }, 2) => {
                let want =
                    routing::proof(&me.secret, Side::Client, &cb, (client, client_nonce), (&me.node, server_nonce));
                match routing::unhex::<32>(w[1]) {
                    Some(p) if routing::constant_time_eq(&want, &p) => {
                        tracing::info!("routing: {client} proved its membership over SMTP from {}", conn.peer.ip());
                        self.link = Link::Member(client.clone());
                        conn.queue(reply(250, "2.0.0", "welcome").as_bytes());
                    }
                    _ => {
                        tracing::warn!("routing: {client} from {} is not of this organisation", conn.peer.ip());
                        self.link = Link::None;
                        conn.queue(reply(535, "5.7.8", "not of this organisation").as_bytes());
                        return Flow::Close;
                    }
                }
            }
            ("DIGEST", Link::Member(_), 1) => match routing::load(&self.store).await {
                Ok((_, t)) => {
                    let (major, minor) = t.versions();
                    conn.queue(format!("250 {} {major} {minor}\r\n", t.digest()).as_bytes());
                }
                Err(e) => conn.queue(reply(451, "4.3.0", &e).as_bytes()),
            },
            ("TABLE", Link::Member(peer), 2) => {
                let Some(len) = w[1].parse::<usize>().ok().filter(|n| *n <= routing::MAX_TABLE) else {
                    return self.error(conn, reply(552, "5.3.4", "table too large"));
                };
                let peer = peer.clone();
                if conn.send(b"354 send the table\r\n").await.is_err() {
                    return Flow::Close;
                }
                let mut body = Vec::with_capacity(len);
                if conn.read_more(len, &mut body).await.is_err() {
                    return Flow::Close;
                }
                let theirs = std::str::from_utf8(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|t| routing::Table::decode(t).map_err(|e| e.to_string()));
                match theirs {
                    Err(e) => conn.queue(reply(501, "5.5.4", &format!("bad table: {e}")).as_bytes()),
                    Ok(theirs) => match routing::merge_stored(&self.store, &theirs).await {
                        Ok((t, changed)) => {
                            if changed {
                                tracing::info!("routing: table merged from {peer} over SMTP");
                            }
                            let (major, minor) = t.versions();
                            conn.queue(format!("250 {} {major} {minor}\r\n", t.digest()).as_bytes());
                        }
                        Err(e) => conn.queue(reply(451, "4.3.0", &e).as_bytes()),
                    },
                }
            }
            ("GET", Link::Member(_), 1) => match routing::load(&self.store).await {
                Ok((_, t)) => {
                    // "250 LEN", then the table's LEN octets (as 691 sends it).
                    let text = t.encode();
                    conn.queue(format!("250 {}\r\n", text.len()).as_bytes());
                    conn.queue(text.as_bytes());
                }
                Err(e) => conn.queue(reply(451, "4.3.0", &e).as_bytes()),
            },
            ("HELLO" | "PROVE" | "DIGEST" | "TABLE" | "GET", Link::Member(_), _) | ("HELLO", _, _) => {
                return self.error(conn, reply(501, "5.5.4", "Syntax: X-LINK2STATE HELLO|PROVE|DIGEST|TABLE|GET"));
            }
            _ => return self.error(conn, reply(503, "5.5.1", "Error: X-LINK2STATE HELLO and PROVE first")),
        }
        Flow::Continue
    }

    pub fn new(cfg: Arc<SmtpConfig>, mail: Arc<Mail>, memory: MessageMemory, throttle: Arc<Throttle>) -> Session {
        Session {
            memory,
            cfg,
            dir: mail.directory().clone(),
            store: Arc::clone(mail.store()),
            mail,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            authenticated_as: None,
            account: None,
            throttle,
            rcpts_in_session: 0,
            link: Link::None,
        }
    }

    /// AUTH (RFC 4954), on submission ports only.
    async fn auth(&mut self, conn: &mut Conn, mechanism: &str, initial: Option<String>) -> Flow {
        if !self.cfg.submission {
            return self
                .error(conn, reply(503, "5.5.1", "Error: authentication not enabled on this port; use submission"));
        }
        if self.account.is_some() {
            return self.error(conn, reply(503, "5.5.1", "Error: already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(conn, reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction"));
        }
        if !self.esmtp {
            return self.error(conn, reply(503, "5.5.1", "Error: send EHLO first"));
        }
        let Some(mech) = Mechanism::parse(mechanism) else {
            return self.error(conn, reply(504, "5.5.4", "Error: unrecognized authentication type"));
        };
        if mech.sends_password() && !(conn.is_tls() || self.cfg.allow_plaintext) {
            return self.error(
                conn,
                reply(538, "5.7.11", "Error: encryption required for requested authentication mechanism"),
            );
        }
        let initial = match initial {
            None => None,
            Some(i) => match sasl::decode_line(&i) {
                Some(v) => Some(v),
                None => return self.error(conn, reply(501, "5.5.2", "Error: invalid base64")),
            },
        };
        let step =
            sasl::run(&self.dir.clone(), mech, initial, &mut LineChallenger::new(conn, "334 ", MAX_AUTH_LINE)).await;
        match step {
            Step::Success(account) => {
                login::succeeded(&self.throttle, conn, "smtp", &account.login);
                self.authenticated_as = Some(account.login.clone());
                self.account = Some(*account);
                conn.queue(reply(235, "2.7.0", "Authentication successful").as_bytes());
            }
            Step::Failed { login } => {
                login::failed(&self.throttle, conn.peer.ip(), "smtp", login.as_deref()).await;
                return self.error(conn, reply(535, "5.7.8", "Error: authentication credentials invalid"));
            }
            Step::Malformed("connection lost") => return Flow::Close,
            Step::Malformed(why) => return self.error(conn, reply(501, "5.5.2", &format!("Error: {why}"))),
            Step::Challenge(_) => return Flow::Close,
        }
        Flow::Continue
    }

    /// True if the authenticated account may use `address` as its sender: its login or
    /// extra addresses, an alias pointing to it, or a group it belongs to.
    async fn may_send_as(&self, address: &str) -> bool {
        let Some(me) = &self.account else { return false };
        let mut a = address.to_ascii_lowercase();
        if let Some((local, domain)) = a.split_once('@')
            && let Some((base, _tag)) = local.split_once('+')
        {
            a = format!("{base}@{domain}");
        }
        if a == me.login {
            return true;
        }
        match self.store.lookup_address(&a).await {
            Ok(AddressEntry::Account(x)) => x.id == me.id,
            Ok(AddressEntry::Alias(targets)) => targets.iter().any(|t| t.eq_ignore_ascii_case(&me.login)),
            Ok(AddressEntry::Group(g)) => g.members.iter().any(|m| m.eq_ignore_ascii_case(&me.login)),
            _ => false,
        }
    }

    /// The session's future holds the session once (an `async fn` wrapper holds it twice).
    pub fn run(self, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
        drive(self, conn)
    }

    fn error(&mut self, conn: &mut Conn, msg: String) -> Flow {
        self.errors += 1;
        conn.queue(msg.as_bytes());
        if self.errors >= self.cfg.max_errors {
            let bye = format!("421 4.7.0 {} Error: too many errors, closing connection\r\n", self.cfg.hostname);
            conn.queue(bye.as_bytes());
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        let cmd = match codec::parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                // A client that mistakes us for a web server gets no second chance.
                if line.starts_with(b"GET ") || line.starts_with(b"POST ") {
                    conn.queue(reply(221, "2.7.0", "Error: I can break rules, too. Goodbye.").as_bytes());
                    return Flow::Close;
                }
                return self.error(conn, e.reply());
            }
        };
        if let Some(tx) = &self.tx
            && tx.chunks.is_some()
            && !matches!(
                cmd,
                Command::Bdat { .. } | Command::Burl { .. } | Command::Rset | Command::Quit | Command::Noop
            )
        {
            return self
                .error(conn, reply(503, "5.5.1", "Error: BDAT transfer in progress, only BDAT, BURL or RSET allowed"));
        }
        match cmd {
            Command::Helo(host) => {
                self.helo = Some(host);
                self.esmtp = false;
                self.tx = None;
                conn.queue(format!("250 {}\r\n", self.cfg.hostname).as_bytes());
            }
            Command::Ehlo(host) => {
                self.helo = Some(host);
                self.esmtp = true;
                self.tx = None;
                let mut lines = vec![
                    self.cfg.hostname.clone(),
                    "PIPELINING".into(),
                    format!("SIZE {}", self.cfg.max_message_size),
                    "ENHANCEDSTATUSCODES".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "CHUNKING".into(),
                    "DSN".into(),
                ];
                if conn.can_starttls() {
                    lines.push("STARTTLS".into());
                }
                if self.cfg.submission && self.account.is_none() {
                    let mechs: Vec<&str> = Mechanism::offered(conn.is_tls() || self.cfg.allow_plaintext)
                        .into_iter()
                        .map(Mechanism::name)
                        .collect();
                    lines.push(format!("AUTH {}", mechs.join(" ")));
                }
                // BURL (RFC 4468) with IMAP URLs of this server, once logged in.
                if self.cfg.submission && self.account.is_some() {
                    lines.push("BURL imap".into());
                }
                // Only to the organisation's own servers, over TLS.
                if self.offered_to(conn.peer.ip(), conn.channel_binding().is_some()).await {
                    lines.push("X-LINK2STATE".into());
                }
                conn.queue(reply_lines(250, &lines).as_bytes());
            }
            Command::StartTls => {
                if !conn.can_starttls() {
                    let why = if conn.is_tls() { "Error: TLS already active" } else { "Error: TLS not available" };
                    return self.error(conn, reply(502, "5.5.1", why));
                }
                if conn.send(reply(220, "2.0.0", "Ready to start TLS").as_bytes()).await.is_err() {
                    return Flow::Close;
                }
                if let Err(e) = conn.start_tls().await {
                    tracing::debug!("smtp: {}: STARTTLS handshake failed: {e}", conn.peer);
                    return Flow::Close;
                }
                // RFC 3207 §4.2: forget everything learnt before TLS.
                self.helo = None;
                self.esmtp = false;
                self.tx = None;
            }
            Command::Mail(from, params) => return self.mail(conn, from, params).await,
            Command::Rcpt(to, params) => return self.rcpt(conn, to, params).await,
            Command::Data => return self.data(conn).await,
            Command::Bdat { size, last } => return self.bdat(conn, size, last).await,
            Command::Burl { url, last } => return self.burl(conn, &url, last).await,
            Command::Rset => {
                self.tx = None;
                conn.queue(reply(250, "2.0.0", "Ok").as_bytes());
            }
            Command::Noop => conn.queue(reply(250, "2.0.0", "Ok").as_bytes()),
            Command::Link2State(words) => return self.link2state(conn, words).await,
            Command::Quit => {
                conn.queue(reply(221, "2.0.0", "Bye").as_bytes());
                return Flow::Close;
            }
            Command::Vrfy => conn.queue(reply(252, "2.5.2", "Cannot VRFY user, but will accept message").as_bytes()),
            Command::Expn => return self.error(conn, reply(502, "5.5.1", "Error: EXPN is not available")),
            Command::Help => conn.queue(
                reply_lines(
                    214,
                    &[
                        "2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS".into(),
                        "2.0.0 See RFC 5321".into(),
                    ],
                )
                .as_bytes(),
            ),
            Command::Auth { mechanism, initial } => return self.auth(conn, &mechanism, initial).await,
        }
        Flow::Continue
    }

    async fn mail(&mut self, conn: &mut Conn, from: String, params: MailParams) -> Flow {
        if self.helo.is_none() {
            return self.error(conn, reply(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.cfg.submission {
            if self.account.is_none() {
                return self.error(conn, reply(530, "5.7.0", "Error: authentication required"));
            }
            if !self.may_send_as(&from).await {
                let shown = sanitize(&from);
                return self.error(conn, reply(550, "5.7.1", &format!("<{shown}>: Sender address not owned by you")));
            }
        }
        if self.tx.is_some() {
            return self.error(conn, reply(503, "5.5.1", "Error: nested MAIL command"));
        }
        if !self.esmtp && params != MailParams::default() {
            return self.error(conn, reply(555, "5.5.4", "Error: parameters need EHLO"));
        }
        if !from.is_ascii() && !params.smtputf8 {
            return self.error(conn, reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"));
        }
        if let Some(size) = params.size
            && size > self.cfg.max_message_size as u64
        {
            return self.error(
                conn,
                reply(
                    552,
                    "5.3.4",
                    &format!("Error: message size exceeds fixed limit of {} bytes", self.cfg.max_message_size),
                ),
            );
        }
        self.tx = Some(Transaction { from, params, ..Transaction::default() });
        // A delivery under way is no longer a connection waiting to say something: it
        // leaves the places a flood competes for (and their shortened waits).
        conn.leave_preauth_share();
        conn.queue(reply(250, "2.1.0", "Ok").as_bytes());
        Flow::Continue
    }

    async fn rcpt(&mut self, conn: &mut Conn, to: String, params: RcptParams) -> Flow {
        let Some(tx) = &self.tx else {
            return self.error(conn, reply(503, "5.5.1", "Error: need MAIL command"));
        };
        if !to.is_ascii() && !tx.params.smtputf8 {
            return self.error(conn, reply(553, "5.6.7", "Error: non-ASCII address requires SMTPUTF8"));
        }
        if tx.rcpts.len() >= self.cfg.max_recipients {
            conn.queue(reply(452, "4.5.3", "Error: too many recipients").as_bytes());
            return Flow::Continue;
        }
        // Across transactions too: one session may not fan out without bound.
        if self.rcpts_in_session >= self.cfg.max_recipients.saturating_mul(RCPT_SESSION_FACTOR) {
            conn.queue(reply(452, "4.5.3", "Error: too many recipients in this session, try again later").as_bytes());
            return Flow::Continue;
        }
        self.rcpts_in_session += 1;
        let shown = sanitize(&to);
        let lookup = if to == "postmaster" { format!("postmaster@{}", self.cfg.primary_domain) } else { to.clone() };
        let resolved = match self.dir.resolve(&lookup).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("smtp: resolving recipient {shown}: {e}");
                conn.queue(reply(451, "4.3.0", &format!("<{shown}>: Temporary lookup failure")).as_bytes());
                return Flow::Continue;
            }
        };
        let res = match resolved {
            Recipient::Local(res) => res,
            Recipient::Unknown => {
                return self
                    .error(conn, reply(550, "5.1.1", &format!("<{shown}>: Recipient address rejected: User unknown")));
            }
            Recipient::Remote
                if self.account.is_some()
                    || self.cfg.trusted_networks.iter().any(|&(n, p)| in_network(conn.peer.ip(), n, p))
                    || (matches!(self.link, Link::Member(_))
                        && self.mail.org_relay(to.rsplit_once('@').map_or("", |(_, d)| d), conn.peer.ip()).await) =>
            {
                // Authenticated, from a trusted network, or a server of this routing
                // organisation that proved itself in this session (X-LINK2STATE) passing on
                // mail the organisation routes: queued for the outbound transport.
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push(AcceptedRcpt {
                        address: to.clone(),
                        params,
                        accounts: Vec::new(),
                        external: vec![to],
                        folder: None,
                    });
                }
                conn.queue(reply(250, "2.1.5", "Ok").as_bytes());
                return Flow::Continue;
            }
            Recipient::Remote => {
                // Relaying is for authenticated submission only: never an open relay.
                return self.error(conn, reply(554, "5.7.1", &format!("<{shown}>: Relay access denied")));
            }
        };
        if let Some((owner, folder)) = &res.folder {
            // Posting needs the folder's p or i right; mail from outside (no login) only
            // when the folder takes anonymous mail. A moderated folder's posts by
            // non-moderators wait in its queue.
            let rights = match &self.account {
                Some(login) => {
                    let ids = self.dir.identifiers(&login.login).await.unwrap_or_default();
                    let acl = self.store.acl(folder.mailbox).await.unwrap_or_default();
                    agora_directory::granted(&acl, &ids)
                }
                None => String::new(),
            };
            let allowed = if self.account.is_some() { rights.contains(['p', 'i']) } else { folder.anonymous_mail };
            if !allowed {
                return self.error(
                    conn,
                    reply(550, "5.7.1", &format!("<{shown}>: Not allowed to post to this public folder")),
                );
            }
            if let Some(tx) = &mut self.tx {
                tx.rcpts.push(AcceptedRcpt {
                    address: to,
                    params,
                    accounts: Vec::new(),
                    external: Vec::new(),
                    folder: Some((*owner, folder.post_path(&rights))),
                });
            }
            conn.queue(reply(250, "2.1.5", "Ok").as_bytes());
            return Flow::Continue;
        }
        let declared = tx.params.size.unwrap_or(0);
        let mut accounts = Vec::new();
        for acc in &res.accounts {
            // Directory answers are cached; the quota check wants today's usage.
            let used = if acc.quota > 0 {
                self.store.account(acc.id).await.ok().flatten().map_or(acc.used, |a| a.used)
            } else {
                0
            };
            let full = acc.quota > 0 && used >= acc.quota;
            let too_big = acc.quota > 0 && used.saturating_add(declared) > acc.quota;
            if full || too_big {
                if res.accounts.len() == 1 && res.external.is_empty() {
                    let r = if full {
                        reply(452, "4.2.2", &format!("<{shown}>: Mailbox full"))
                    } else {
                        reply(552, "5.2.2", &format!("<{shown}>: Message too large for the mailbox's quota"))
                    };
                    conn.queue(r.as_bytes());
                    return Flow::Continue;
                }
                tracing::warn!("smtp: {} is over quota; skipped in expansion of {shown}", acc.login);
                continue;
            }
            accounts.push(acc.id);
        }
        if let Some(tx) = &mut self.tx {
            tx.rcpts.push(AcceptedRcpt { address: to, params, accounts, external: res.external, folder: None });
        }
        conn.queue(reply(250, "2.1.5", "Ok").as_bytes());
        Flow::Continue
    }

    async fn data(&mut self, conn: &mut Conn) -> Flow {
        match &self.tx {
            None => return self.error(conn, reply(503, "5.5.1", "Error: need MAIL command")),
            Some(tx) if tx.rcpts.is_empty() => {
                return self.error(conn, reply(554, "5.5.1", "Error: no valid recipients"));
            }
            Some(_) => {}
        }
        if conn.send(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.is_err() {
            return Flow::Close;
        }
        conn.ack_promptly();
        // The message is finished even if shutdown starts meanwhile; the drain deadline bounds it.
        conn.set_interruptible(false);
        let mut dec = DataDecoder::new(self.cfg.max_message_size);
        let mut held = Held::default();
        loop {
            match conn.read_line(MAX_TEXT_LINE).await {
                Read::Line(l) => {
                    if dec.push_line(&l) {
                        break;
                    }
                    account(&mut dec, &mut held, &self.memory, self.cfg.spool.as_deref());
                }
                Read::TooLong => dec.push_long_line(),
                Read::Timeout => {
                    conn.set_interruptible(true);
                    conn.queue(&self.timeout_reply());
                    return Flow::Close;
                }
                _ => return Flow::Close,
            }
        }
        conn.set_interruptible(true);
        reclaim(&mut dec, &mut held, &self.memory);
        let flow = self.finish_message(conn, dec).await;
        drop(held);
        flow
    }

    async fn bdat(&mut self, conn: &mut Conn, size: u64, last: bool) -> Flow {
        let max = self.cfg.max_message_size;
        let Some(tx) = &mut self.tx else {
            let _ = conn.skip(size.min(usize::MAX as u64) as usize).await;
            return self.error(conn, reply(503, "5.5.1", "Error: need MAIL command"));
        };
        if tx.rcpts.is_empty() {
            let _ = conn.skip(size as usize).await;
            return self.error(conn, reply(554, "5.5.1", "Error: no valid recipients"));
        }
        let (dec, held) = tx.chunks.get_or_insert_with(|| (DataDecoder::new(max), Held::default()));
        conn.set_interruptible(false);
        let over = dec.len() as u64 + size > max as u64;
        if !over && !dec.spilled() {
            // Reserve before reading, so the chunk itself never exceeds the budget.
            let want = dec.body.len() + size as usize;
            if !dec.no_memory && !held.cover(&self.memory, want) {
                let spilled = self.cfg.spool.as_deref().is_some_and(|d| dec.spill_to(d));
                if !spilled {
                    dec.refuse_for_memory();
                }
                *held = Held::default();
            }
        }
        let read =
            if over || dec.no_memory { conn.skip(size as usize).await } else { conn.read_exact(size as usize).await };
        conn.set_interruptible(true);
        match read {
            Read::Bytes(b) => {
                if over {
                    dec.too_big = true;
                } else {
                    dec.push_chunk(&b);
                }
            }
            _ => return Flow::Close,
        }
        if !last {
            conn.queue(reply(250, "2.0.0", &format!("Ok: {size} octets received")).as_bytes());
            return Flow::Continue;
        }
        let Some((mut dec, mut held)) = tx.chunks.take() else { return Flow::Close };
        reclaim(&mut dec, &mut held, &self.memory);
        dec.load_spilled();
        dec.check_chunked();
        let flow = self.finish_message(conn, dec).await;
        drop(held);
        flow
    }

    /// BURL (RFC 4468): appends what an IMAP URL of this server names, checked as the
    /// submission server acting for the logged-in user (URLAUTH `submit+user`,
    /// `authuser` or `anonymous`), as one more chunk of the message.
    async fn burl(&mut self, conn: &mut Conn, url: &str, last: bool) -> Flow {
        let Some(user) = self.authenticated_as.clone().filter(|_| self.cfg.submission) else {
            return self.error(conn, reply(503, "5.7.0", "Error: BURL needs a login on submission"));
        };
        let max = self.cfg.max_message_size;
        let Some(tx) = &mut self.tx else {
            return self.error(conn, reply(503, "5.5.1", "Error: need MAIL command"));
        };
        if tx.rcpts.is_empty() {
            return self.error(conn, reply(554, "5.5.1", "Error: no valid recipients"));
        }
        let who = agora_store::urlauth::Fetcher::Submit(&user);
        let data = match agora_store::urlauth::fetch(&*self.store, url, who, now()).await {
            Ok(Some(f)) => f.bytes(),
            Ok(None) => {
                return self.error(conn, reply(554, "5.7.8", "Error: the URL is not valid or not yours to send"));
            }
            Err(e) => {
                tracing::error!("smtp: BURL: {e}");
                return self.error(conn, reply(451, "4.4.0", "Error: could not read the URL, try again later"));
            }
        };
        let (dec, held) = tx.chunks.get_or_insert_with(|| (DataDecoder::new(max), Held::default()));
        if dec.len() + data.len() > max {
            dec.too_big = true;
        } else if !dec.no_memory && !dec.spilled() && !held.cover(&self.memory, dec.body.len() + data.len()) {
            let spilled = self.cfg.spool.as_deref().is_some_and(|d| dec.spill_to(d));
            if !spilled {
                dec.refuse_for_memory();
            }
            *held = Held::default();
            dec.push_chunk(&data);
        } else if !dec.no_memory {
            dec.push_chunk(&data);
        }
        if !last {
            conn.queue(reply(250, "2.5.0", &format!("Ok: {} octets added from the URL", data.len())).as_bytes());
            return Flow::Continue;
        }
        let Some((mut dec, mut held)) = tx.chunks.take() else { return Flow::Close };
        reclaim(&mut dec, &mut held, &self.memory);
        dec.load_spilled();
        dec.check_chunked();
        let flow = self.finish_message(conn, dec).await;
        drop(held);
        flow
    }

    /// Checks, then stores the message durably and answers 250, or answers the fault.
    /// Either way the transaction ends.
    async fn finish_message(&mut self, conn: &mut Conn, mut dec: DataDecoder) -> Flow {
        dec.load_spilled();
        let Some(tx) = self.tx.take() else { return Flow::Close };
        if let Some(fault) = dec.fault() {
            return self.error(conn, fault);
        }
        if hops(&dec.body) > MAX_HOPS {
            return self.error(conn, reply(554, "5.4.6", "Error: too many hops, probably a mail loop"));
        }
        // Submission: every From: address must be the sender's own too (no spoofing).
        if self.cfg.submission {
            for from in header_addresses(&dec.body, "from") {
                if !self.may_send_as(&from).await {
                    let shown = sanitize(&from);
                    return self.error(conn, reply(550, "5.7.1", &format!("<{shown}>: From address not owned by you")));
                }
            }
        }
        let id = agora_mail::queue_id();
        let received = now();
        let proto = match (self.esmtp, conn.is_tls(), self.authenticated_as.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let proto = if tx.params.smtputf8 { proto.replacen("SMTP", "UTF8SMTP", 1) } else { proto.to_string() };
        let helo = sanitize(self.helo.as_deref().unwrap_or("unknown"));
        let for_clause =
            if tx.rcpts.len() == 1 { format!("\r\n\tfor <{}>", sanitize(&tx.rcpts[0].address)) } else { String::new() };
        let trace = format!(
            "Return-Path: <{}>\r\nReceived: from {helo} ([{}])\r\n\tby {} (Agora) with {proto} id {id}{for_clause};\r\n\t{}\r\n",
            sanitize(&tx.from),
            conn.peer.ip(),
            self.cfg.hostname,
            codec::rfc5322_date(received),
        );
        // Trusted networks, and servers of this routing organisation (their mail was
        // checked where it came in).
        let trusted = self.cfg.trusted_networks.iter().any(|&(n, p)| in_network(conn.peer.ip(), n, p))
            || matches!(self.link, Link::Member(_));
        let intake = Intake {
            id: id.clone(),
            received,
            sender: tx.from.clone(),
            recipients: tx
                .rcpts
                .into_iter()
                .map(|r| Rcpt {
                    address: r.address,
                    accounts: r.accounts,
                    external: r.external,
                    folder: r.folder,
                    notify: r.params.notify,
                    orcpt: r.params.orcpt,
                })
                .collect(),
            ret: tx.params.ret,
            envid: tx.params.envid,
            origin: Origin {
                ip: conn.peer.ip(),
                helo,
                authenticated_as: self.authenticated_as.clone(),
                trusted,
                tls: conn.is_tls(),
            },
            trace,
            body: dec.body,
            policy: Policy {
                dmarc_reject: self.cfg.dmarc_reject,
                dkim_sign: self.cfg.dkim_sign,
                arc_seal: self.cfg.arc_seal,
                check_budget: self.cfg.check_budget,
            },
        };
        let rcpts = intake.recipients.len();
        match self.mail.accept(intake).await {
            Ok(done) => {
                tracing::info!(
                    "smtp: {id} from=<{}> rcpts={rcpts} copies={} queued={} client={}",
                    sanitize(&tx.from),
                    done.copies,
                    done.queued,
                    conn.peer.ip()
                );
                conn.queue(reply(250, "2.0.0", &format!("Ok: queued as {id}")).as_bytes());
            }
            Err(IntakeError::Dmarc) => {
                return self.error(conn, reply(550, "5.7.1", "Error: rejected by the sender domain's DMARC policy"));
            }
            Err(IntakeError::Rejected(reason)) => {
                // The recipient's own words, one line of printable text.
                let reason: String =
                    reason.chars().map(|c| if c.is_control() { ' ' } else { c }).take(200).collect::<String>();
                let reason =
                    if reason.trim().is_empty() { "Rejected by the recipient's filter".into() } else { reason };
                return self.error(conn, reply(550, "5.7.1", reason.trim()));
            }
            Err(IntakeError::Store(e)) => {
                tracing::error!("smtp: storing message {id}: {e}");
                conn.queue(reply(451, "4.3.0", "Error: could not store message, try again later").as_bytes());
            }
        }
        Flow::Continue
    }
}

#[async_trait]
impl LineProtocol for Session {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn failed(&self, last_line: &[u8]) -> bool {
        matches!(last_line.first(), Some(b'4' | b'5'))
    }

    fn max_line(&self) -> usize {
        MAX_COMMAND_LINE
    }

    fn greeting(&self, _conn: &Conn) -> Vec<u8> {
        format!("220 {} ESMTP Agora\r\n", self.cfg.hostname).into_bytes()
    }

    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        self.command(conn, line).await
    }

    fn too_long(&mut self, conn: &mut Conn) -> Flow {
        self.error(conn, reply(500, "5.5.2", "Error: line too long"))
    }

    fn timeout_reply(&self) -> Vec<u8> {
        format!("421 4.4.2 {} Error: timeout exceeded\r\n", self.cfg.hostname).into_bytes()
    }

    fn shutdown_reply(&self) -> Vec<u8> {
        format!("421 4.3.2 {} Service shutting down, closing connection\r\n", self.cfg.hostname).into_bytes()
    }
    fn busy_goodbye(&self) -> Vec<u8> {
        format!("421 4.3.2 {} Too busy; try again later\r\n", self.cfg.hostname).into_bytes()
    }
}

/// Received header fields of a message's header.
fn hops(message: &[u8]) -> usize {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    message[..end].split(|&b| b == b'\n').filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:")).count()
}

/// The addr-specs of a header field of the message's header (unfolded).
fn header_addresses(message: &[u8], name: &str) -> Vec<String> {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let mut value = String::new();
    let mut inside = false;
    for line in message[..end].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if inside {
                value.push_str(line);
            }
            continue;
        }
        // `get`: a header name with 8-bit bytes must not be sliced inside a character.
        inside =
            line.get(..name.len()).is_some_and(|h| h.eq_ignore_ascii_case(name)) && line[name.len()..].starts_with(':');
        if inside {
            value.push_str(&line[name.len() + 1..]);
            value.push(',');
        }
    }
    // Angle-bracketed addresses, else bare words with an @.
    let mut out = Vec::new();
    let mut rest = value.as_str();
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { break };
        out.push(rest[open + 1..open + close].trim().to_string());
        rest = &rest[open + close + 1..];
    }
    if out.is_empty() {
        out = value
            .split([',', ' ', ';'])
            .map(|w| w.trim().trim_matches(['(', ')', '"']))
            .filter(|w| w.contains('@'))
            .map(str::to_string)
            .collect();
    }
    out
}
