//! The ManageSieve session (RFC 5804): the capability greeting, STARTTLS, SASL over
//! string challenges, then an account's Sieve scripts in the information store, each
//! script checked by the Sieve compiler before it is kept. Whoever runs Sieve at
//! delivery is told of every change (`OnChange`).

use std::sync::Arc;

use agora_directory::Directory;
use agora_directory::sasl::{self, Challenger, Mechanism, Step};
use agora_directory::throttle::Throttle;
use agora_net::{Conn, Flow, LineProtocol, Read, drive};
use agora_service::login;
use agora_store::{Account, AccountId, Store, StoreError};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::codec::{self, Command, CommandError, Decoded, Limits, MAX_LINE, bye, no, ok};

/// Told the account whose scripts changed (the mail core drops what it compiled).
pub type OnChange = Arc<dyn Fn(AccountId) + Send + Sync>;

/// Largest literal read past (and dropped) to stay in step after a refusal; a client
/// announcing more is disconnected.
const MAX_SKIP: u64 = 64 * 1024 * 1024;
/// The most literals of one refused command read past.
const MAX_SKIPS: usize = 4;

#[derive(Debug, Clone)]
pub struct SieveConfig {
    /// Allow PLAIN and LOGIN without TLS (off: only SCRAM-SHA-256 before STARTTLS).
    pub allow_plaintext: bool,
    /// Largest script, in octets (`QUOTA/MAXSIZE` beyond).
    pub max_script_size: u64,
    /// Most scripts per account (`QUOTA/MAXSCRIPTS` beyond).
    pub max_scripts: usize,
    pub max_errors: u32,
}

impl Default for SieveConfig {
    fn default() -> Self {
        SieveConfig { allow_plaintext: false, max_script_size: 1024 * 1024, max_scripts: 32, max_errors: 10 }
    }
}

pub struct Session {
    cfg: Arc<SieveConfig>,
    dir: Directory,
    store: Arc<dyn Store>,
    throttle: Arc<Throttle>,
    changed: OnChange,
    account: Option<Account>,
    errors: u32,
}

/// How reading a whole command (or a SASL answer) went.
enum Gathered<T> {
    Done(T),
    /// Refused; the session is back in step with the client.
    Refused(CommandError),
    /// The connection is over: lost, timed out, shut down or hopelessly out of step,
    /// with the goodbye to say, if any.
    Gone(Option<Vec<u8>>),
}

impl Session {
    pub fn new(
        cfg: Arc<SieveConfig>,
        dir: Directory,
        store: Arc<dyn Store>,
        throttle: Arc<Throttle>,
        changed: OnChange,
    ) -> Session {
        Session { cfg, dir, store, throttle, changed, account: None, errors: 0 }
    }

    /// The session's future holds the session once (an `async fn` wrapper holds it twice).
    pub fn run(self, conn: Conn) -> impl std::future::Future<Output = ()> + Send {
        drive(self, conn)
    }

    fn limits(&self) -> Limits {
        Limits { max_line: MAX_LINE, max_script: self.cfg.max_script_size }
    }

    fn plaintext_ok(&self, conn: &Conn) -> bool {
        conn.is_tls() || self.cfg.allow_plaintext
    }

    fn error(&mut self, conn: &mut Conn, reply: &[u8]) -> Flow {
        self.errors += 1;
        conn.queue(reply);
        if self.errors >= self.cfg.max_errors {
            conn.queue(&bye(None, "Too many errors, closing"));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// The capability response (RFC 5804 §1.7), ended by OK.
    fn capabilities(&self, conn: &Conn) -> Vec<u8> {
        let mut out = codec::capability("IMPLEMENTATION", Some("Agora"));
        if self.account.is_none() {
            let mechs: Vec<&str> = Mechanism::offered(self.plaintext_ok(conn)).iter().map(|m| m.name()).collect();
            out.push_str(&codec::capability("SASL", Some(&mechs.join(" "))));
        }
        out.push_str(&codec::capability("SIEVE", Some(&agora_sieve::EXTENSIONS.join(" "))));
        if self.account.is_none() && conn.can_starttls() {
            out.push_str(&codec::capability("STARTTLS", None));
        }
        out.push_str(&codec::capability("MAXREDIRECTS", Some("4")));
        if let Some(a) = &self.account {
            out.push_str(&codec::capability("OWNER", Some(&a.login)));
        }
        out.push_str(&codec::capability("UNAUTHENTICATE", None));
        out.push_str(&codec::capability("VERSION", Some("1.0")));
        out.into_bytes()
    }

    /// Reads the rest of an item whose first line is `first` (literals and the lines
    /// after them); a refused item is read to its end, so the next line is a command.
    async fn gather<T>(
        &self,
        conn: &mut Conn,
        first: &[u8],
        decode: impl Fn(&[u8], &Limits) -> Decoded<T>,
    ) -> Gathered<T> {
        let limits = self.limits();
        let mut buf = first.to_vec();
        let mut line_start = 0;
        loop {
            match decode(&buf, &limits) {
                Decoded::Done(v, _) => return Gathered::Done(v),
                Decoded::Error(e) => {
                    let pending = match &e {
                        CommandError::TooBig { literal: Some(n), .. } => Some(*n),
                        _ => codec::literal_suffix(&buf[line_start..]),
                    };
                    if let Some(n) = pending
                        && let Err(bye) = self.read_past(conn, n).await
                    {
                        return Gathered::Gone(bye);
                    }
                    return Gathered::Refused(e);
                }
                Decoded::Incomplete { literal } => {
                    if let Some(n) = literal {
                        conn.ack_promptly();
                        if let Err(r) = conn.read_more(n as usize, &mut buf).await {
                            return self.gone(conn, r);
                        }
                    }
                    line_start = buf.len();
                    match conn.read_line(MAX_LINE).await {
                        Read::Line(l) => buf.extend_from_slice(&l),
                        Read::TooLong => return Gathered::Gone(Some(bye(None, "Line too long"))),
                        r => return self.gone(conn, r),
                    }
                }
            }
        }
    }

    /// Drops a literal of `n` octets and the rest of its command, literals included; on
    /// failure, the connection is over (with this goodbye, if any).
    async fn read_past(&self, conn: &mut Conn, mut n: u64) -> Result<(), Option<Vec<u8>>> {
        for _ in 0..MAX_SKIPS {
            if n > MAX_SKIP {
                return Err(Some(bye(None, "Too much data")));
            }
            match conn.skip(n as usize).await {
                Read::Bytes(_) => {}
                r => return Err(self.goodbye(conn, r)),
            }
            match conn.read_line(MAX_LINE).await {
                Read::Line(l) => match codec::literal_suffix(&l) {
                    Some(more) => n = more,
                    None => return Ok(()),
                },
                Read::TooLong => return Err(Some(bye(None, "Line too long"))),
                r => return Err(self.goodbye(conn, r)),
            }
        }
        Err(Some(bye(None, "Too many literals")))
    }

    fn gone<T>(&self, conn: &Conn, r: Read) -> Gathered<T> {
        Gathered::Gone(self.goodbye(conn, r))
    }

    /// The goodbye for a read that ended the connection (none when the client left).
    fn goodbye(&self, conn: &Conn, r: Read) -> Option<Vec<u8>> {
        match r {
            Read::Timeout => Some(self.timeout_reply()),
            Read::Shutdown if conn.evicted() => Some(self.busy_goodbye()),
            Read::Shutdown => Some(self.shutdown_reply()),
            _ => None,
        }
    }

    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        let cmd = match self.gather(conn, line, codec::decode).await {
            Gathered::Done(c) => c,
            Gathered::Refused(e) => return self.error(conn, &e.reply()),
            Gathered::Gone(bye) => {
                if let Some(b) = bye {
                    conn.queue(&b);
                }
                return Flow::Close;
            }
        };
        let account = self.account.as_ref().map(|a| a.id);
        match (account, cmd) {
            (_, Command::Capability) => {
                let mut out = self.capabilities(conn);
                out.extend_from_slice(&ok(None, "Capability completed"));
                conn.queue(&out);
            }
            (_, Command::Logout) => {
                conn.queue(&ok(None, "Logout completed"));
                return Flow::Close;
            }
            (_, Command::Noop(tag)) => {
                let code = tag.map(|t| format!("TAG {}", codec::string(&t)));
                conn.queue(&ok(code.as_deref(), "Done"));
            }
            (None, Command::StartTls) => {
                if !conn.can_starttls() {
                    return self.error(conn, &no(None, "TLS is not available or already active"));
                }
                if conn.send(&ok(None, "Begin TLS negotiation now")).await.is_err() {
                    return Flow::Close;
                }
                if let Err(e) = conn.start_tls().await {
                    tracing::debug!("managesieve: {}: STARTTLS handshake failed: {e}", conn.peer);
                    return Flow::Close;
                }
                // RFC 5804 §2.2: the capabilities again, unasked, over TLS.
                let mut out = self.capabilities(conn);
                out.extend_from_slice(&ok(None, "TLS negotiation successful"));
                conn.queue(&out);
            }
            (None, Command::Authenticate { mechanism, initial }) => {
                return self.authenticate(conn, &mechanism, initial).await;
            }
            (Some(_), Command::StartTls | Command::Authenticate { .. }) => {
                return self.error(conn, &no(None, "Already authenticated"));
            }
            (None, _) => return self.error(conn, &no(None, "Authenticate first")),
            (Some(_), Command::Unauthenticate) => {
                self.account = None;
                conn.queue(&ok(None, "Unauthenticated"));
            }
            (Some(id), cmd) => return self.scripts(conn, id, cmd).await,
        }
        Flow::Continue
    }

    async fn authenticate(&mut self, conn: &mut Conn, mech: &str, initial: Option<String>) -> Flow {
        let Some(mech) = Mechanism::parse(mech) else {
            return self.error(conn, &no(None, "Unsupported authentication mechanism"));
        };
        if mech.sends_password() && !self.plaintext_ok(conn) {
            return self.error(
                conn,
                &no(Some("ENCRYPT-NEEDED"), "Plaintext authentication disallowed without TLS: use STARTTLS"),
            );
        }
        let initial = match initial.as_deref() {
            None => None,
            Some(s) => match sasl::decode_line(s) {
                Some(v) => Some(v),
                None => return self.error(conn, &no(None, "Invalid base64 in the initial response")),
            },
        };
        let dir = self.dir.clone();
        let step = sasl::run(&dir, mech, initial, &mut StringChallenger { session: self, conn }).await;
        match step {
            Step::Success(account) => {
                login::succeeded(&self.throttle, conn, "managesieve", &account.login);
                self.account = Some(*account);
                conn.queue(&ok(None, "Logged in"));
                Flow::Continue
            }
            Step::Failed { login } => {
                login::failed(&self.throttle, conn.peer.ip(), "managesieve", login.as_deref()).await;
                self.error(conn, &no(None, "Authentication failed"))
            }
            Step::Malformed("connection lost") => Flow::Close,
            Step::Malformed(why) => self.error(conn, &no(None, why)),
            Step::Challenge(_) => Flow::Close,
        }
    }

    /// The commands of the authenticated state, on the account's scripts.
    async fn scripts(&mut self, conn: &mut Conn, id: AccountId, cmd: Command) -> Flow {
        // Names that would be taken are checked; others that could not have been
        // taken simply name no script.
        let new_name = match &cmd {
            Command::HaveSpace { name, .. } | Command::PutScript { name, .. } => Some(name),
            Command::RenameScript { to, .. } => Some(to),
            _ => None,
        };
        if let Some(name) = new_name
            && !codec::valid_name(name)
        {
            return self
                .error(conn, &no(None, "Bad script name: 1 to 128 characters, no control characters and no \"/\""));
        }
        let done = match cmd {
            Command::HaveSpace { name, size } => match self.room(id, &name, size).await {
                Ok(None) => Ok(ok(None, "Putscript would succeed")),
                Ok(Some(refusal)) => Ok(refusal),
                Err(e) => Err(e),
            },
            Command::PutScript { name, script } => self.put(id, &name, &script).await,
            Command::CheckScript(script) => Ok(self.check(&script).unwrap_or_else(|| ok(None, "Script is valid"))),
            Command::ListScripts => self.store.sieve_scripts(id).await.map(|list| {
                let mut out = Vec::new();
                for s in list {
                    out.extend_from_slice(codec::string(&s.name).as_bytes());
                    out.extend_from_slice(if s.active { b" ACTIVE\r\n" } else { b"\r\n" });
                }
                out.extend_from_slice(&ok(None, "Listscripts completed"));
                out
            }),
            Command::SetActive(name) => self.set_active(id, &name).await,
            Command::GetScript(name) => self.store.sieve_script(id, &name).await.map(|s| match s {
                Some(text) => {
                    let mut out = format!("{{{}}}\r\n", text.len()).into_bytes();
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&ok(None, "Getscript completed"));
                    out
                }
                None => nonexistent(&name),
            }),
            Command::DeleteScript(name) => match self.store.delete_sieve_script(id, &name).await {
                Ok(()) => {
                    (self.changed)(id);
                    Ok(ok(None, "Deletescript completed"))
                }
                Err(StoreError::NotFound(_)) => Ok(nonexistent(&name)),
                Err(StoreError::Invalid(_)) => Ok(no(Some("ACTIVE"), "You may not delete the active script")),
                Err(e) => Err(e),
            },
            Command::RenameScript { from, to } => match self.store.rename_sieve_script(id, &from, &to).await {
                Ok(()) => {
                    (self.changed)(id);
                    Ok(ok(None, "Renamescript completed"))
                }
                Err(StoreError::NotFound(_)) => Ok(nonexistent(&from)),
                Err(StoreError::Exists(_)) => {
                    Ok(no(Some("ALREADYEXISTS"), &format!("A script named {to:?} already exists")))
                }
                Err(e) => Err(e),
            },
            _ => return self.error(conn, &no(None, "Unexpected command")),
        };
        // A refusal here (no such script, quota, a script that does not compile) is an
        // answer, not a client's mistake: it does not count towards closing.
        match done {
            Ok(reply) => {
                conn.queue(&reply);
                Flow::Continue
            }
            Err(e) => {
                let login = self.account.as_ref().map(|a| a.login.as_str()).unwrap_or_default();
                tracing::error!("managesieve: Sieve scripts of {login}: {e}");
                conn.queue(&no(Some("TRYLATER"), "Server error, try again later"));
                Flow::Continue
            }
        }
    }

    /// Whether a script of `size` octets may be stored as `name`: None if so, else the
    /// refusal (size, then the number of scripts unless it replaces one).
    async fn room(&self, id: AccountId, name: &str, size: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if size > self.cfg.max_script_size {
            let text = format!("Script larger than {} octets", self.cfg.max_script_size);
            return Ok(Some(no(Some("QUOTA/MAXSIZE"), &text)));
        }
        let list = self.store.sieve_scripts(id).await?;
        if list.len() >= self.cfg.max_scripts && !list.iter().any(|s| s.name == name) {
            let text = format!("At most {} scripts", self.cfg.max_scripts);
            return Ok(Some(no(Some("QUOTA/MAXSCRIPTS"), &text)));
        }
        Ok(None)
    }

    /// The refusal of a script that does not compile; None for one that does.
    fn check(&self, script: &str) -> Option<Vec<u8>> {
        agora_sieve::compile(script).err().map(|e| no(None, &e.to_string()))
    }

    async fn put(&self, id: AccountId, name: &str, script: &str) -> Result<Vec<u8>, StoreError> {
        if let Some(refusal) = self.room(id, name, script.len() as u64).await? {
            return Ok(refusal);
        }
        if let Some(refusal) = self.check(script) {
            return Ok(refusal);
        }
        self.store.put_sieve_script(id, name, script).await?;
        (self.changed)(id);
        Ok(ok(None, "Putscript completed"))
    }

    async fn set_active(&self, id: AccountId, name: &str) -> Result<Vec<u8>, StoreError> {
        if name.is_empty() {
            self.store.activate_sieve_script(id, None).await?;
            (self.changed)(id);
            return Ok(ok(None, "No script is active"));
        }
        let Some(text) = self.store.sieve_script(id, name).await? else { return Ok(nonexistent(name)) };
        // Kept scripts were checked when put; a compiler that has grown stricter since
        // gets its say before one runs.
        if let Some(refusal) = self.check(&text) {
            return Ok(refusal);
        }
        match self.store.activate_sieve_script(id, Some(name)).await {
            Ok(()) => {
                (self.changed)(id);
                Ok(ok(None, "Setactive completed"))
            }
            Err(StoreError::NotFound(_)) => Ok(nonexistent(name)),
            Err(e) => Err(e),
        }
    }
}

fn nonexistent(name: &str) -> Vec<u8> {
    no(Some("NONEXISTENT"), &format!("There is no script named {name:?}"))
}

/// ManageSieve's side of a SASL exchange (RFC 5804 §2.1): a challenge goes out as a
/// quoted base64 string on its own line, the answer comes back as a string (quoted or a
/// literal), `"*"` to cancel.
struct StringChallenger<'a> {
    session: &'a Session,
    conn: &'a mut Conn,
}

#[async_trait]
impl Challenger for StringChallenger<'_> {
    async fn challenge(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let line = format!("\"{}\"\r\n", B64.encode(data));
        if self.conn.send(line.as_bytes()).await.is_err() {
            return Err("connection lost");
        }
        let first = match self.conn.read_line(MAX_LINE).await {
            Read::Line(l) => l,
            Read::TooLong => return Err("Response too long"),
            r => {
                if let Some(b) = self.session.goodbye(self.conn, r) {
                    self.conn.queue(&b);
                }
                return Err("connection lost");
            }
        };
        let text = match self.session.gather(self.conn, &first, codec::decode_response).await {
            Gathered::Done(t) => t,
            Gathered::Refused(_) => return Err("Response is not a string"),
            Gathered::Gone(bye) => {
                if let Some(b) = bye {
                    self.conn.queue(&b);
                }
                return Err("connection lost");
            }
        };
        if text == "*" {
            return Ok(None);
        }
        sasl::decode_line(&text).map(Some).ok_or("Invalid base64")
    }
}

#[async_trait]
impl LineProtocol for Session {
    fn name(&self) -> &'static str {
        "managesieve"
    }

    fn failed(&self, last_line: &[u8]) -> bool {
        last_line.starts_with(b"NO") || last_line.starts_with(b"BYE")
    }

    fn max_line(&self) -> usize {
        MAX_LINE
    }

    /// The capabilities, unasked (RFC 5804 §1.7), then OK.
    fn greeting(&self, conn: &Conn) -> Vec<u8> {
        let mut out = self.capabilities(conn);
        out.extend_from_slice(&ok(None, "Agora ManageSieve ready"));
        out
    }

    async fn line(&mut self, conn: &mut Conn, line: &[u8]) -> Flow {
        self.command(conn, line).await
    }

    /// A line past the limit is dropped whole, and with it anything it announced: the
    /// session could not tell a literal's octets from commands, so it ends.
    fn too_long(&mut self, conn: &mut Conn) -> Flow {
        conn.queue(&bye(None, "Line too long"));
        Flow::Close
    }

    fn timeout_reply(&self) -> Vec<u8> {
        bye(None, "Disconnected for inactivity")
    }

    fn shutdown_reply(&self) -> Vec<u8> {
        bye(Some("TRYLATER"), "Server shutting down")
    }

    fn busy_goodbye(&self) -> Vec<u8> {
        bye(Some("TRYLATER"), "Too busy, try again later")
    }
}
